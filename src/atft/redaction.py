"""Secrets are never written: the values to hide, and a redactor for text and log records.

A secret is the value of ``JQUANTS_API_KEY`` (or of any variable whose name says KEY, TOKEN, SECRET or
PASSWORD) in the environment, or any value in ``./.env`` (read with python-dotenv, never copied into
``os.environ``). Values shorter than ``MIN_SECRET_LEN`` are ignored, so ``1`` or ``true`` never get
masked in ordinary text. Every log handler of a run carries :class:`RedactingFilter`, the command
line redacts its error line, and the resolved ``config.yaml`` is redacted before it is written.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

MASK = "***"
MIN_SECRET_LEN = 8
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


def secret_values(env_file: str | Path = ".env", environ: dict[str, str] | None = None) -> list[str]:
    """The secret values known to this process, longest first (so a longer one is masked whole)."""
    environ = os.environ if environ is None else environ
    values = {v.strip() for k, v in environ.items() if _SECRET_NAME.search(k)}
    if Path(env_file).is_file():
        from dotenv import dotenv_values

        values |= {(v or "").strip() for v in dotenv_values(env_file).values()}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's formatted message (args are merged in first, then cleared)."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = secret_values() if secrets is None else secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg, record.args = redact(record.getMessage(), self.secrets), None
        return True


def _leaves(node, prefix: str = ""):
    """``(dotted key, value)`` of every string leaf of a resolved config container."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict | list):
            yield from _leaves(value, path)
        elif isinstance(value, str):
            yield path, value


def redact_config(cfg) -> list[str]:
    """Mask secrets in ``cfg`` in place (e.g. a key interpolated with ``${oc.env:JQUANTS_API_KEY}``), so the
    run's config.yaml, checkpoint hyper-parameters and TensorBoard hparams never hold one; returns the keys."""
    from omegaconf import OmegaConf

    secrets = secret_values()
    if not secrets:
        return []
    hits = [(k, v) for k, v in _leaves(OmegaConf.to_container(cfg, resolve=True)) if redact(v, secrets) != v]
    for key, value in hits:
        OmegaConf.update(cfg, key, redact(value, secrets), force_add=True)
    return [k for k, _ in hits]
