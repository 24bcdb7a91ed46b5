-- The research joined back onto the companies it was about.
select
    c.symbol,
    c.security,
    c.gics_sector,
    c.gics_sub_industry,
    c.headquarters,
    c.date_added,
    r.market_cap_tier,
    r.employee_estimate,
    r.pays_dividend,
    r.market_position,
    r.insight_count,
    r.processor
from read_parquet('../companies/companies.parquet') as c
join {{ ref('stg_company_research') }} as r using (symbol)
