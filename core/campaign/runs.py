"""MLflow run listings that read every page: a campaign easily has more child runs than one page.

Example:
    >>> children = child_runs(MlflowClient(), parent_run)
"""

from __future__ import annotations

from collections.abc import Sequence

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from ablate.adapters import PARENT_TAG

PAGE = 1000  # runs per page (MLflow's maximum for a file store is larger; servers cap lower)
EXPERIMENTS_PER_QUERY = 100  # MLflow refuses a search over more experiments at once


def search_all(client: MlflowClient, experiment_ids: Sequence[str], filter_string: str = "",
               view: int = ViewType.ACTIVE_ONLY) -> list[Run]:
    """Every run of the experiments that matches ``filter_string``, all pages, any status."""
    runs: list[Run] = []
    ids = list(experiment_ids)
    for i in range(0, len(ids), EXPERIMENTS_PER_QUERY):
        token = None
        while True:
            page = client.search_runs(ids[i:i + EXPERIMENTS_PER_QUERY], filter_string, view, PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    return runs


def child_runs(client: MlflowClient, parent: Run, filter_string: str = "") -> list[Run]:
    """Every child run of ``parent`` (in its experiment), optionally narrowed by ``filter_string``."""
    where = f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'" + (f" and {filter_string}" if filter_string else "")
    return search_all(client, [parent.info.experiment_id], where)


def running_runs(client: MlflowClient) -> list[Run]:
    """Every MLflow run whose status is RUNNING, in every experiment."""
    ids = [e.experiment_id for e in client.search_experiments()]
    return search_all(client, ids, "attributes.status = 'RUNNING'")
