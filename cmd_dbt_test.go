package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

// dbtJinja matches the two Jinja calls the example models use.
var dbtJinja = regexp.MustCompile(`\{\{\s*(source\('taskpipe',\s*'(\w+)'\)|ref\('(\w+)'\))\s*\}\}`)

// TestDBTModels runs the companies pipeline, then the models of
// examples/dbt in DuckDB (source and ref rendered as table names, in
// dependency order) against its output, as dbt-duckdb would, and checks
// what they compute.
func TestDBTModels(t *testing.T) {
	work := t.TempDir()
	copyTree(t, "examples", work)
	spec := filepath.Join(work, "companies", "pipeline.yaml")
	cmd := &runCmd{Pipeline: spec, JSON: true, Progress: "none"}
	captureStdout(t, func() error { return cmd.Run(&CLI{}, quietLogger()) })

	p, err := specs.LoadPipeline(spec)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sinks.OpenDuckDB(p.Resolve(p.Sink.DuckDB.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	dbtDir := filepath.Join(work, "dbt")
	if _, err := db.Exec("SET file_search_path = " + specs.QuoteLiteral(dbtDir)); err != nil {
		t.Fatal(err)
	}

	// Build every model in dependency order, as its configured kind.
	for _, m := range []string{
		"staging/stg_company_research", "staging/failed_company_research",
		"marts/company_profile", "marts/sector_summary",
	} {
		sqlText, err := os.ReadFile(filepath.Join(dbtDir, "models", m+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		rendered := dbtJinja.ReplaceAllStringFunc(string(sqlText), func(s string) string {
			g := dbtJinja.FindStringSubmatch(s)
			return specs.QuoteIdent(g[2] + g[3])
		})
		kind := "VIEW"
		if strings.HasPrefix(m, "marts/") {
			kind = "TABLE"
		}
		name := filepath.Base(m)
		if _, err := db.Exec("CREATE " + kind + " " + specs.QuoteIdent(name) + " AS " + rendered); err != nil {
			t.Fatalf("model %s: %v", m, err)
		}
	}

	var profiles, symbols, sectors, total, failed int64
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT symbol) FROM company_profile`).
		Scan(&profiles, &symbols); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT count(*), sum(companies) FROM sector_summary`).Scan(&sectors, &total); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM failed_company_research`).Scan(&failed); err != nil {
		t.Fatal(err)
	}
	if profiles != 503 || symbols != 503 || sectors != 11 || total != 503 || failed != 0 {
		t.Errorf("company_profile %d rows (%d symbols), sector_summary %d sectors with %d companies, %d failed",
			profiles, symbols, sectors, total, failed)
	}
}
