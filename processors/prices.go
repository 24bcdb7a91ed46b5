package processors

import "strings"

// DefaultPrices maps Parallel's processor names to their published price in
// US dollars per run (Parallel lists them per 1,000 runs); each -fast
// variant costs the same as its standard processor. Use it to set
// price_per_run for processors that forward to Parallel, or to estimate
// what a dry run on the synthetic processor would have cost.
var DefaultPrices = map[string]float64{
	"lite": 0.005, "lite-fast": 0.005,
	"base": 0.010, "base-fast": 0.010,
	"core": 0.025, "core-fast": 0.025,
	"core2x": 0.050, "core2x-fast": 0.050,
	"pro": 0.100, "pro-fast": 0.100,
	"ultra": 0.300, "ultra-fast": 0.300,
	"ultra2x": 0.600, "ultra2x-fast": 0.600,
	"ultra4x": 1.200, "ultra4x-fast": 1.200,
	"ultra8x": 2.400, "ultra8x-fast": 2.400,
}

// EstimateCost is what runs runs on a Parallel processor would cost, in US
// dollars; ok is false for a name Parallel does not publish a price for.
func EstimateCost(processor string, runs int) (usd float64, ok bool) {
	price, ok := DefaultPrices[strings.ToLower(strings.TrimSpace(processor))]
	if !ok {
		return 0, false
	}
	return price * float64(runs), true
}
