-- Completed research only, one row per company, with the run's provenance.
-- Rows that failed stay in the source table with their error; see
-- failed_company_research.
select
    symbol,
    run_id,
    processor,
    employee_estimate,
    market_cap_tier,
    pays_dividend,
    market_position,
    key_insights,
    len(key_insights) as insight_count,
    finished_at,
    spec_hash
from {{ source('taskpipe', 'company_research') }}
where status = 'completed'
