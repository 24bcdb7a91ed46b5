-- Per GICS sector: companies researched, their tiers and dividend payers.
select
    gics_sector,
    count(*) as companies,
    count(*) filter (where market_cap_tier = 'mega') as mega_caps,
    count(*) filter (where pays_dividend) as dividend_payers,
    round(avg(employee_estimate)) as avg_employee_estimate,
    sum(employee_estimate) as total_employee_estimate
from {{ ref('company_profile') }}
group by gics_sector
order by gics_sector
