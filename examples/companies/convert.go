//go:build ignore

// Convert turns the S&P 500 constituents CSV (public domain, ODC PDDL, from
// the datasets/s-and-p-500-companies project) into companies.parquet, the
// input of the companies example, with snake_case column names and typed
// columns. The Founded column is kept as text: it holds values such as
// "2013 (1888)" that no number type can hold faithfully.
//
//	go run examples/companies/convert.go -in sp500-constituents.csv -out examples/companies/companies.parquet
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"log"
	"strings"

	_ "github.com/duckdb/duckdb-go/v2"
)

func main() {
	in := flag.String("in", "", "the constituents CSV")
	out := flag.String("out", "companies.parquet", "the Parquet file to write")
	flag.Parse()
	if *in == "" {
		log.Fatal("convert: -in is required")
	}
	db, err := sql.Open("duckdb", "?autoinstall_known_extensions=false&autoload_known_extensions=false")
	if err != nil {
		log.Fatalf("convert: open duckdb: %v", err)
	}
	defer db.Close()

	// Read every column as text first, so that nothing is guessed, then
	// cast the clean ones; order by symbol so the file is reproducible.
	q := fmt.Sprintf(`COPY (
		SELECT
			trim("Symbol")                      AS symbol,
			trim("Security")                    AS security,
			trim("GICS Sector")                 AS gics_sector,
			trim("GICS Sub-Industry")           AS gics_sub_industry,
			trim("Headquarters Location")       AS headquarters,
			CAST("Date added" AS DATE)          AS date_added,
			CAST("CIK" AS BIGINT)               AS cik,
			trim("Founded")                     AS founded
		FROM read_csv(%s, header = true, all_varchar = true)
		ORDER BY symbol
	) TO %s (FORMAT parquet, COMPRESSION zstd)`, quote(*in), quote(*out))
	if _, err := db.Exec(q); err != nil {
		log.Fatalf("convert %s: %v", *in, err)
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM read_parquet(" + quote(*out) + ")").Scan(&n); err != nil {
		log.Fatalf("convert: count %s: %v", *out, err)
	}
	fmt.Printf("wrote %d companies to %s\n", n, *out)
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
