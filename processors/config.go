package processors

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/specs"
)

// ConfigVersion is the only version of the processor file this build reads.
const ConfigVersion = 1

// Defaults of a processor entry that leaves a limit out.
const (
	DefaultConcurrency = 16
	DefaultTimeout     = 10 * time.Minute
	DefaultMaxAttempts = 3
	// DefaultCacheMaxAge is how long a completed result serves identical
	// runs, for every kind but synthetic (whose runs cost nothing).
	DefaultCacheMaxAge = 24 * time.Hour
)

// Factory builds a processor of one kind from the options node of its
// entry in the processor file. It decodes the node strictly (DecodeOptions)
// and returns errors that name the option at fault ("url: must be set").
type Factory func(options yaml.Node, log *slog.Logger) (engine.Processor, error)

// registry maps processor kinds to their factories.
var registry = struct {
	sync.RWMutex
	kinds map[string]Factory
}{kinds: map[string]Factory{
	"synthetic": newSyntheticKind,
	"http":      newHTTPKind,
	"exec":      newExecKind,
	"openai":    newOpenAIKind,
	"parallel":  newParallelKind,
}}

// Register adds a processor kind, such as one built outside this package.
// It panics when the kind is already registered, as that is a programming
// error.
func Register(kind string, f Factory) {
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.kinds[kind]; ok {
		panic(fmt.Sprintf("processors: kind %q registered twice", kind))
	}
	registry.kinds[kind] = f
}

// Kinds lists the registered processor kinds in order.
func Kinds() []string {
	registry.RLock()
	defer registry.RUnlock()
	kinds := make([]string, 0, len(registry.kinds))
	for k := range registry.kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}

// factory returns the factory of a kind.
func factory(kind string) (Factory, bool) {
	registry.RLock()
	defer registry.RUnlock()
	f, ok := registry.kinds[kind]
	return f, ok
}

// fileConfig is the processor file.
type fileConfig struct {
	Version    int                        `yaml:"version"`
	Processors map[string]processorConfig `yaml:"processors"`
}

// processorConfig is one named processor. Pointers tell a limit left out
// (the default applies) from one set to zero (an error).
type processorConfig struct {
	Kind          string         `yaml:"kind"`
	Concurrency   *int           `yaml:"concurrency"`
	RatePerMinute float64        `yaml:"rate_per_minute"`
	Timeout       *time.Duration `yaml:"timeout"`
	MaxAttempts   *int           `yaml:"max_attempts"`
	PricePerRun   float64        `yaml:"price_per_run"`
	CacheMaxAge   *time.Duration `yaml:"cache_max_age"`
	Options       yaml.Node      `yaml:"options"`
}

// Keys allowed at each level of the file, for strict decoding with errors
// that name the key.
var (
	fileKeys      = []string{"version", "processors"}
	processorKeys = []string{
		"kind", "concurrency", "rate_per_minute", "timeout", "max_attempts",
		"price_per_run", "cache_max_age", "options",
	}
)

//go:embed default.yaml
var defaultConfig []byte

// Default returns the embedded default processors: "synthetic" at zero
// latency with a concurrency of 20,000.
func Default(log *slog.Logger) map[string]engine.Backend {
	backends, err := Parse(defaultConfig, log)
	if err != nil {
		panic(fmt.Sprintf("processors: embedded default config: %v", err))
	}
	return backends
}

// Load reads the processor file at path and builds its processors.
func Load(path string, log *slog.Logger) (map[string]engine.Backend, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read processor config: %w", err)
	}
	backends, err := Parse(data, log)
	if err != nil {
		return nil, fmt.Errorf("load processor config %s: %w", path, err)
	}
	return backends, nil
}

// Parse decodes a processor file strictly, validates all of it (reporting
// every problem at once, each naming its field, such as
// "processors.fast.concurrency: must be > 0") and builds the processors. On
// error, processors already built are closed. When PARALLEL_API_KEY is set,
// Parallel's processor names the file leaves out are added (see
// addParallelDefaults).
func Parse(data []byte, log *slog.Logger) (map[string]engine.Backend, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	// Check keys on the node tree first, so that typos are named by path.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse processor config: %w", err)
	}
	keyErrs := checkKeys(&doc)
	var cfg fileConfig
	if err := doc.Decode(&cfg); err != nil {
		// Report wrong values with the unknown keys, each by its path.
		keyErrs = append(keyErrs, specs.DescribeYAMLError(data, err))
	}
	if len(keyErrs) > 0 {
		return nil, errors.Join(keyErrs...)
	}

	// Validate the limits of every entry.
	var errs []error
	if cfg.Version != ConfigVersion {
		errs = append(errs, fmt.Errorf("version: must be %d, not %d", ConfigVersion, cfg.Version))
	}
	if len(cfg.Processors) == 0 {
		errs = append(errs, errors.New("processors: must name at least one processor"))
	}
	names := make([]string, 0, len(cfg.Processors))
	for name := range cfg.Processors {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		errs = append(errs, cfg.Processors[name].validate("processors."+name)...)
		if name == "" || strings.ContainsAny(name, " \t\r\n") {
			errs = append(errs, fmt.Errorf("processors.%q: name must be non-empty, without spaces", name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Build the processors; a failure closes those already built.
	backends := make(map[string]engine.Backend, len(names))
	for _, name := range names {
		pc := cfg.Processors[name]
		f, _ := factory(pc.Kind)
		p, err := f(pc.Options, log.With("processor", name))
		if err != nil {
			errs = append(errs, prefixErrors("processors."+name+".options", err)...)
			continue
		}
		backends[name] = pc.backend(p)
	}
	if len(errs) == 0 {
		errs = append(errs, addParallelDefaults(cfg, backends, log))
	}
	if err := errors.Join(errs...); err != nil {
		closeAll(backends, log)
		return nil, err
	}
	return backends, nil
}

// validate checks one entry; path is "processors.<name>".
func (pc processorConfig) validate(path string) []error {
	var errs []error
	if pc.Kind == "" {
		errs = append(errs, fmt.Errorf("%s.kind: must be set (one of %s)",
			path, strings.Join(Kinds(), ", ")))
	} else if _, ok := factory(pc.Kind); !ok {
		errs = append(errs, fmt.Errorf("%s.kind: unknown kind %q (known: %s)",
			path, pc.Kind, strings.Join(Kinds(), ", ")))
	}
	if pc.Concurrency != nil && *pc.Concurrency <= 0 {
		errs = append(errs, fmt.Errorf("%s.concurrency: must be > 0", path))
	}
	if pc.RatePerMinute < 0 {
		errs = append(errs, fmt.Errorf("%s.rate_per_minute: must be >= 0 (0 = unlimited)", path))
	}
	if pc.Timeout != nil && *pc.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.timeout: must be > 0", path))
	}
	if pc.MaxAttempts != nil && *pc.MaxAttempts <= 0 {
		errs = append(errs, fmt.Errorf("%s.max_attempts: must be > 0", path))
	}
	if pc.PricePerRun < 0 {
		errs = append(errs, fmt.Errorf("%s.price_per_run: must be >= 0", path))
	}
	if pc.CacheMaxAge != nil && *pc.CacheMaxAge < 0 {
		errs = append(errs, fmt.Errorf("%s.cache_max_age: must be >= 0 (0 = no result cache)", path))
	}
	return errs
}

// backend wraps a built processor with the entry's limits, defaults
// applied.
func (pc processorConfig) backend(p engine.Processor) engine.Backend {
	b := engine.Backend{
		Processor:     p,
		Concurrency:   DefaultConcurrency,
		RatePerMinute: pc.RatePerMinute,
		Timeout:       DefaultTimeout,
		MaxAttempts:   DefaultMaxAttempts,
		PricePerRun:   pc.PricePerRun,
	}
	if pc.Concurrency != nil {
		b.Concurrency = *pc.Concurrency
	}
	if pc.Timeout != nil {
		b.Timeout = *pc.Timeout
	}
	if pc.MaxAttempts != nil {
		b.MaxAttempts = *pc.MaxAttempts
	}
	if pc.Kind != "synthetic" {
		b.CacheMaxAge = DefaultCacheMaxAge
	}
	if pc.CacheMaxAge != nil {
		b.CacheMaxAge = *pc.CacheMaxAge
	}
	return b
}

// checkKeys reports keys the file format does not know, by path.
func checkKeys(doc *yaml.Node) []error {
	if doc.Kind == 0 {
		return []error{errors.New("processor config is empty")}
	}
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("line %d: processor config must be a mapping", root.Line)}
	}
	errs := unknownKeys(root, "", fileKeys)
	procs := mappingValue(root, "processors")
	if procs == nil {
		return errs
	}
	if procs.Kind != yaml.MappingNode {
		return append(errs, fmt.Errorf("processors: line %d: must be a mapping of names", procs.Line))
	}
	for i := 0; i+1 < len(procs.Content); i += 2 {
		name, entry := procs.Content[i].Value, procs.Content[i+1]
		if entry.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Errorf("processors.%s: line %d: must be a mapping", name, entry.Line))
			continue
		}
		errs = append(errs, unknownKeys(entry, "processors."+name+".", processorKeys)...)
	}
	return errs
}

// unknownKeys lists the keys of mapping m that are not in allowed.
func unknownKeys(m *yaml.Node, prefix string, allowed []string) []error {
	var errs []error
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if !slices.Contains(allowed, k.Value) {
			errs = append(errs, fmt.Errorf("%s%s: unknown key (line %d; known: %s)",
				prefix, k.Value, k.Line, strings.Join(allowed, ", ")))
		}
	}
	return errs
}

// mappingValue returns the value of key in mapping m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// DecodeOptions decodes a kind's options node into out, rejecting unknown
// keys. An absent node leaves out unchanged.
func DecodeOptions(node yaml.Node, out any) error {
	if node.Kind == 0 {
		return nil
	}
	raw, err := yaml.Marshal(&node)
	if err != nil {
		return fmt.Errorf("encode options: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		// Line numbers from the re-encoded node would mislead; the node's
		// own line is where the options begin.
		var parts []string
		for _, part := range strings.Split(err.Error(), "\n") {
			part = strings.TrimSpace(strings.TrimPrefix(part, "yaml: "))
			if part == "" || part == "unmarshal errors:" {
				continue
			}
			if strings.HasPrefix(part, "line ") {
				if i := strings.Index(part, ": "); i > 0 {
					part = part[i+2:]
				}
			}
			parts = append(parts, part)
		}
		return &optionsError{line: node.Line, msg: strings.Join(parts, "; ")}
	}
	return nil
}

// optionsError is an options node that does not decode into its kind's
// options, such as one with an unknown key.
type optionsError struct {
	line int
	msg  string
}

// Error implements error.
func (e *optionsError) Error() string {
	return fmt.Sprintf("options at line %d: %s", e.line, e.msg)
}

// prefixErrors prefixes every error joined in err with path, so that an
// option error "url: must be set" reads "processors.x.options.url: must be
// set".
func prefixErrors(path string, err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		var oe *optionsError
		if errors.As(e, &oe) {
			out[i] = fmt.Errorf("%s: line %d: %s", path, oe.line, oe.msg)
			continue
		}
		out[i] = fmt.Errorf("%s.%w", path, e)
	}
	return out
}

// closeAll closes the processors that hold resources.
func closeAll(backends map[string]engine.Backend, log *slog.Logger) {
	for name, b := range backends {
		if c, ok := b.Processor.(engine.Closer); ok {
			if err := c.Close(); err != nil {
				log.Warn("close processor", "processor", name, "error", err)
			}
		}
	}
}

// newSyntheticKind is the Factory of the synthetic kind.
func newSyntheticKind(options yaml.Node, _ *slog.Logger) (engine.Processor, error) {
	var o SyntheticOptions
	if err := DecodeOptions(options, &o); err != nil {
		return nil, err
	}
	return NewSynthetic(o)
}
