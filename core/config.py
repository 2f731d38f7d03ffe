"""Config building blocks every section uses: the strict base model, stage resources, storage options, secrets."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConfigError(ValueError):
    """A configuration file could not be read or does not validate."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageResources(Strict):
    """What one actor of a stage asks Ray for, and how many actors the pool may have."""

    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(4, ge=1)
    # "auto" sizes the pool from the cluster's resources; an int fixes max actors.
    concurrency: int | Literal["auto"] = "auto"

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("concurrency must be >= 1 or 'auto'")
        return v


SECRET_KEY_PATTERN = re.compile(r"key|secret|token|password|passwd|credential|session|auth|signature", re.I)


def redact_secrets(value: object) -> object:
    """A copy of a storage_options-like value with every secret-looking key's value replaced by "<redacted>"."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if SECRET_KEY_PATTERN.search(str(k)) else redact_secrets(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    return value


# Loggers that print request headers at DEBUG (botocore's "Sending http request" shows the access key id in the
# Authorization header). Held at INFO or above while a run executes, whatever the root level.
CREDENTIAL_LOGGERS = ("botocore", "aiobotocore", "urllib3", "gcsfs", "google.auth", "adlfs", "azure")


def quiet_credential_loggers() -> None:
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def without_secrets(value: object) -> object:
    """storage_options minus secret-looking keys: what may define data (endpoint, region), never credentials."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if not SECRET_KEY_PATTERN.search(str(k))}
    return value


# fsspec options (endpoint_url, key, secret, client_kwargs, ...). Kept out of repr; secret-looking keys are
# redacted in run.json (PipelineConfig.redacted_dump) and never part of the data fingerprint. Prefer credentials
# from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ...) over config.
StorageOptions = dict[str, Any]


def storage_options_field() -> Any:
    """A `storage_options` field: empty by default, kept out of repr."""
    return Field(default_factory=dict, repr=False)
