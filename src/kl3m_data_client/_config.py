"""ClientConfig: every setting of a client, validated once, picklable, secrets kept out of repr."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypedDict

from kl3m_data_client._budget import DEFAULT_MEMORY_BUDGET, parse_size
from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client._limits import DEFAULT_LIMITS, Limits
from kl3m_data_client._version import __version__

DEFAULT_BUCKET = "data.kl3m.ai"
_SECRET_FIELDS = frozenset({"aws_secret_access_key", "aws_session_token"})


@dataclass(frozen=True)
class ClientConfig:
    """Settings shared by :class:`AsyncKL3MClient`, :class:`KL3MClient` and the exporter."""

    bucket: str = DEFAULT_BUCKET
    region: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    endpoint_url: str | None = None
    anonymous: bool = False
    requester_pays: bool = False
    max_concurrency: int = 64
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry_mode: str = "standard"
    max_attempts: int = 5
    object_deadline: float | None = None
    verify: bool | str | None = None
    limits: Limits = DEFAULT_LIMITS
    #: Bytes the documents in flight of one operation may hold (see ``_budget``).
    memory_budget: int = DEFAULT_MEMORY_BUDGET  # bytes; a str like '512MiB' is parsed
    verbose: bool = False
    #: Where object GETs go: ``"auto"`` (obstore when it is installed and the settings allow,
    #: else aiobotocore), ``"obstore"`` (the same, but obstore must be installed) or
    #: ``"aiobotocore"``. Listings and HEADs always go through aiobotocore.
    data_plane: Literal["auto", "obstore", "aiobotocore"] = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.bucket, str) or not self.bucket:
            raise InvalidInputError(f"bucket must be a non-empty string, got {self.bucket!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise InvalidInputError(
                f"max_concurrency must be a positive integer, got {self.max_concurrency!r}"
            )
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise InvalidInputError(
                f"retry_mode must be 'standard', 'adaptive' or 'legacy', got {self.retry_mode!r}"
            )
        if self.max_attempts < 1:
            raise InvalidInputError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise InvalidInputError("connect_timeout and read_timeout must be positive")
        if self.object_deadline is not None and self.object_deadline <= 0:
            raise InvalidInputError("object_deadline must be positive seconds or None")
        if isinstance(self.memory_budget, str):
            try:
                object.__setattr__(self, "memory_budget", parse_size(self.memory_budget))
            except ValueError as exc:
                raise InvalidInputError(f"memory_budget: {exc}") from exc
        if (
            isinstance(self.memory_budget, bool)
            or not isinstance(self.memory_budget, int)
            or self.memory_budget < 1
        ):
            raise InvalidInputError(
                f"memory_budget must be a positive number of bytes, got {self.memory_budget!r}"
            )
        if self.data_plane not in ("auto", "obstore", "aiobotocore"):
            raise InvalidInputError(
                f"data_plane must be 'auto', 'obstore' or 'aiobotocore', got {self.data_plane!r}"
            )
        if self.data_plane == "obstore" and importlib.util.find_spec("obstore") is None:
            raise InvalidInputError("data_plane='obstore' needs obstore: pip install obstore")
        if self.anonymous and (self.aws_access_key_id or self.aws_secret_access_key):
            raise InvalidInputError("anonymous=True cannot be combined with explicit credentials")
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise InvalidInputError(
                "aws_access_key_id and aws_secret_access_key must be given together"
            )

    @classmethod
    def from_kwargs(
        cls,
        *,
        bucket: str | None = None,
        bucket_name: str | None = None,
        region: str | None = None,
        region_name: str | None = None,
        **kwargs: Any,
    ) -> ClientConfig:
        """Build from constructor keywords; ``bucket_name``/``region_name`` are aliases."""
        if bucket and bucket_name and bucket != bucket_name:
            raise InvalidInputError("pass either bucket or bucket_name, not both")
        if region and region_name and region != region_name:
            raise InvalidInputError("pass either region or region_name, not both")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        return cls(
            bucket=bucket or bucket_name or DEFAULT_BUCKET,
            region=region or region_name,
            **{k: v for k, v in kwargs.items() if v is not None},
        )

    def with_options(self, **changes: Any) -> ClientConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)

    @property
    def path_style(self) -> bool:
        """Path-style addressing: for custom endpoints (argument or AWS_ENDPOINT_URL) and dots."""
        env_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return self.endpoint_url is not None or bool(env_endpoint) or "." in self.bucket

    def botocore_options(self, extra_connections: int = 0, session: Any = None) -> dict[str, Any]:
        """Keyword arguments of ``botocore.config.Config`` (or ``AioConfig``) for S3 clients."""
        appid = session.get_config_variable("user_agent_appid") if session is not None else None
        options: dict[str, Any] = {
            "max_pool_connections": self.max_concurrency + extra_connections,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retries": {"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            "s3": {"addressing_style": "path" if self.path_style else "auto"},
            "user_agent": user_agent(self.retry_mode, appid),
        }
        if self.anonymous:
            from botocore import UNSIGNED

            options["signature_version"] = UNSIGNED
        return options

    def create_client_kwargs(self, session: Any) -> dict[str, Any]:
        """``session.create_client("s3", config=..., **these)``: region, endpoint, TLS, keys."""
        kwargs: dict[str, Any] = {}
        if self.region:
            kwargs["region_name"] = self.region
        elif session.get_config_variable("region") is None:
            kwargs["region_name"] = "us-east-1"
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.verify is not None:
            kwargs["verify"] = self.verify
        if self.aws_access_key_id:
            kwargs["aws_access_key_id"] = self.aws_access_key_id
            kwargs["aws_secret_access_key"] = self.aws_secret_access_key
            if self.aws_session_token:
                kwargs["aws_session_token"] = self.aws_session_token
        return kwargs

    def public_dict(self) -> dict[str, Any]:
        """The settings without secrets (for manifests, logs and reprs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _SECRET_FIELDS or f.name == "limits":
                continue
            out[f.name] = getattr(self, f.name)
        out["aws_access_key_id"] = "***" if self.aws_access_key_id else None
        return out

    def without_secrets(self) -> ClientConfig:
        """A copy that resolves credentials through botocore's chain wherever it is used."""
        return replace(
            self, aws_access_key_id=None, aws_secret_access_key=None, aws_session_token=None
        )


@functools.lru_cache(maxsize=8)
def user_agent(retry_mode: str, appid: str | None = None) -> str:
    """botocore's standard User-Agent under our name, built once per process.

    botocore rebuilds the header for every request (~15% of the CPU of a small GET); a
    fixed ``Config(user_agent=...)`` skips that. Only botocore's per-request feature tags
    (``m/...``) are left out; the session's ``user_agent_extra`` is still appended.
    """
    from botocore.config import Config
    from botocore.useragent import UserAgentString

    ua = UserAgentString.from_environment()
    ua.set_session_config(
        session_user_agent_name="kl3m-data-client",
        session_user_agent_version=__version__,
        session_user_agent_extra=None,
    )
    config = Config(retries={"mode": retry_mode}, user_agent_appid=appid)
    return str(ua.with_client_config(config).to_string())


class ClientKeywords(TypedDict, total=False):
    """The keyword options of a client besides its positional ones (0.2.0's ``bucket``,
    ``region`` and the three credentials) and ``verbose`` (positional in ``KL3MClient``):
    the other fields of :class:`ClientConfig`, same names and types, plus the aliases
    ``bucket_name``/``region_name``. A unit test keeps this list equal to the config's
    fields: a new setting is a field of :class:`ClientConfig` and a line here."""

    bucket_name: str | None
    region_name: str | None
    profile: str | None
    endpoint_url: str | None
    anonymous: bool
    requester_pays: bool
    max_concurrency: int
    connect_timeout: float
    read_timeout: float
    retry_mode: str
    max_attempts: int
    object_deadline: float | None
    verify: bool | str | None
    limits: Limits | None
    memory_budget: int | str | None
    data_plane: Literal["auto", "obstore", "aiobotocore"]


class ClientOptions(ClientKeywords, total=False):
    """Every keyword option of :class:`~kl3m_data_client.AsyncKL3MClient`."""

    verbose: bool
