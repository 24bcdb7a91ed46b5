"""Company research as an Airflow step, two ways.

``company_research`` runs ``taskpipe run`` in one task: it submits the rows,
follows the task group and writes the typed table, then exits 0, or 3 when
more rows failed than --max-failed allows.

``company_research_async`` splits the same work so that no worker slot is
held while the runs execute: ``submit`` runs ``taskpipe run --no-wait`` and
pushes the task group id to XCom, ``wait_for_group`` is a sensor in
reschedule mode that calls ``taskpipe wait`` with a short timeout on each
poke, and ``collect`` runs ``taskpipe run`` again, which writes the results
and submits nothing.

Retries are safe in both: taskpipe keeps its resume state in the pipeline's
state_dir, so a retried task skips rows already completed, re-attaches to
runs still active and never pays for a completed run twice. Point
TASKPIPE_PIPELINE at a pipeline whose state_dir is on storage that survives
between task attempts (the same machine, or a shared volume).
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta

from airflow import DAG
from airflow.exceptions import AirflowException
from airflow.operators.bash import BashOperator
from airflow.sensors.python import PythonSensor

PIPELINE = os.environ.get("TASKPIPE_PIPELINE", "/opt/taskpipe/examples/companies/pipeline.yaml")
STATE_DIR = os.environ.get("TASKPIPE_STATE_DIR", "/opt/taskpipe/examples/companies/.taskpipe")
TASKPIPE = os.environ.get("TASKPIPE_BIN", "taskpipe")

# Exit codes of taskpipe (docs/pipeline.md).
EXIT_OK, EXIT_FAILED_ROWS, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 3, 4, 5

default_args = {
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}

with DAG(
    dag_id="company_research",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    default_args=default_args,
    tags=["taskpipe"],
) as dag:
    BashOperator(
        task_id="run_pipeline",
        # --json prints one summary object on stdout, which Airflow keeps
        # as the task's XCom; progress goes to the task log.
        bash_command=f"{TASKPIPE} run {PIPELINE} --json --max-failed 5",
        do_xcom_push=True,
    )


def _group_done(ti) -> bool:
    """Poke: True when the group is done, False while it is still active."""
    group = ti.xcom_pull(task_ids="submit").strip()
    proc = subprocess.run(
        [TASKPIPE, "wait", group, "--state-dir", STATE_DIR, "--timeout", "50s"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == EXIT_OK:
        return True
    if proc.returncode == EXIT_TIMEOUT:
        return False
    raise AirflowException(f"taskpipe wait exited {proc.returncode}: {proc.stderr.strip()}")


with DAG(
    dag_id="company_research_async",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    default_args=default_args,
    tags=["taskpipe"],
) as dag_async:
    submit = BashOperator(
        task_id="submit",
        # Prints only the task group id on stdout: the XCom the sensor reads.
        bash_command=f"{TASKPIPE} run {PIPELINE} --no-wait",
        do_xcom_push=True,
    )
    wait_for_group = PythonSensor(
        task_id="wait_for_group",
        python_callable=_group_done,
        mode="reschedule",
        poke_interval=60,
        timeout=6 * 60 * 60,
    )
    collect = BashOperator(
        task_id="collect",
        bash_command=f"{TASKPIPE} run {PIPELINE} --json --max-failed 5",
        do_xcom_push=True,
    )
    submit >> wait_for_group >> collect
