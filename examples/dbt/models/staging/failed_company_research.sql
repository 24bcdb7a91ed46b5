-- Every row that did not complete, and why: the rows to look at before
-- running the pipeline again with --retry-failed.
select symbol, status, error, run_id, finished_at
from {{ source('taskpipe', 'company_research') }}
where status <> 'completed'
