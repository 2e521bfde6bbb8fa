"""Background jobs whose state and result live in the database.

A job is a row (queued → running → succeeded | failed) and a function of its
parameters. A restart loses no result: finished jobs are read back from the
table, and jobs a previous process left queued or running are run again at
start-up (every job kind is idempotent).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import Job

logger = logging.getLogger(__name__)

JobFunction = Callable[[dict[str, Any], int], dict[str, Any]]


class JobRunner:
    def __init__(self, sessions: sessionmaker[Session], functions: dict[str, JobFunction]) -> None:
        self.sessions = sessions
        self.functions = functions
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="v2g-job")
        self.futures: dict[int, Future[None]] = {}

    def submit(self, kind: str, params: dict[str, Any]) -> int:
        if kind not in self.functions:
            raise KeyError(kind)
        with self.sessions.begin() as session:
            job = Job(kind=kind, params=params, status="queued")
            session.add(job)
            session.flush()
            job_id = job.id
        self.futures[job_id] = self.executor.submit(self._run, job_id)
        return job_id

    def resume_interrupted(self) -> list[int]:
        """Queue again what a previous process left unfinished."""
        with self.sessions() as session:
            ids = list(session.scalars(select(Job.id).where(Job.status.in_(["queued", "running"]))))
        for job_id in ids:
            self.futures[job_id] = self.executor.submit(self._run, job_id)
        return ids

    def wait(self, job_id: int, timeout: float | None = None) -> None:
        future = self.futures.get(job_id)
        if future is not None:
            future.result(timeout=timeout)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)

    def _run(self, job_id: int) -> None:
        with self.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            job.status = "running"
            job.attempts += 1
            kind, params = job.kind, dict(job.params)
        try:
            result = self.functions[kind](params, job_id)
        except Exception as exc:
            logger.warning("job %d (%s) failed: %s", job_id, kind, exc)
            with self.sessions.begin() as session:
                job = session.get_one(Job, job_id)
                job.status = "failed"
                job.error = f"{type(exc).__name__}: {exc}"
                logger.debug("%s", traceback.format_exc())
            return
        with self.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            job.status = "succeeded"
            job.result = result
