"""Settings for the escrow project: twelve-factor, every value from the environment with a safe default
for `make run` (SQLite, in-process bus, sandbox payment provider)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None or value == "" else int(value)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# The fallback key only exists so `make run` works out of the box; production sets SECRET_KEY. Its
# "django-insecure-" prefix makes `manage.py check --deploy` report it if production ever runs with it.
SECRET_KEY = (
    os.environ.get("SECRET_KEY") or "django-insecure-dev-only-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.mfa",
    "allauth.headless",
    "allauth.usersessions",
    "allauth.socialaccount.providers.discord",
    "apps.core",
    "apps.outbox",
    "apps.escrow",
    "apps.payments",
    "apps.projections",
    "apps.notifications",
    "apps.gateway",
    "apps.web",
    "apps.discord",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS, the Swagger UI) in every mode, before anything touches the database.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.gateway.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "apps.gateway.login_throttle.LoginRateLimitMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "escrow_project.urls"
WSGI_APPLICATION = "escrow_project.wsgi.application"
ASGI_APPLICATION = "escrow_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.web.context.sandbox",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Bounded connections whatever the server (runserver's thread per client, gunicorn's threads): one
    # psycopg pool per process, at most DATABASE_POOL_MAX connections; a request that waits longer than
    # DATABASE_POOL_TIMEOUT for one is answered 503 with Retry-After (docs/reliability.md). The pool keeps
    # the connections, so Django's own persistence (CONN_MAX_AGE) is off; DATABASE_POOL=0 turns it back on.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
    if env_bool("DATABASE_POOL", True):
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN", 1),
            "max_size": env_int("DATABASE_POOL_MAX", 10),
            "timeout": float(os.environ.get("DATABASE_POOL_TIMEOUT", "10")),
            # A connection idle this long is closed (down to min_size); one older than this is replaced.
            "max_idle": 300.0,
            "max_lifetime": 1800.0,
            # After an outage, a failed reconnection is retried with backoff for this long; then the next
            # request starts a fresh attempt, so the pool comes back within seconds of the database.
            "reconnect_timeout": float(os.environ.get("DATABASE_POOL_RECONNECT_SECONDS", "5")),
        }
# Seconds a client is told to wait (Retry-After) when the database is unavailable or its pool exhausted.
DATABASE_RETRY_AFTER_SECONDS = env_int("DATABASE_RETRY_AFTER_SECONDS", 2)
# The longest pause of the bus worker, the relay and the consumers between attempts while the database is away.
DATABASE_BACKOFF_MAX_SECONDS = float(os.environ.get("DATABASE_BACKOFF_MAX_SECONDS", "5"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One writer at a time: take the write lock when the transaction starts, not on first write, so two
    # threads never deadlock upgrading read locks; wait for it instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# Shared state (rate-limit counters, the mutation throttle, allauth's TOTP code-reuse guard) lives in the
# default cache, so every process must see the same one: Redis in production (CACHE_URL=redis://host:6379/0),
# the database's cache table in the embedded default (created by `migrate`: gateway migration 0008). CACHE_URL=locmem:// is per process and only for single-process experiments.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHE_KEY_PREFIX = os.environ.get("CACHE_KEY_PREFIX", "escrow")
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    _cache: dict[str, object] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
elif CACHE_URL.startswith("locmem://"):
    _cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
elif CACHE_URL in ("", "db://") or CACHE_URL.startswith("db://"):
    _cache = {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": CACHE_URL.removeprefix("db://") or "escrow_cache",
        # Never culled: past MAX_ENTRIES Django's database cache deletes a third of the live entries in key
        # order, which could drop a token revocation (they must last as long as the tokens they end). The
        # bus worker deletes expired rows instead (apps/gateway/cache_table.py, a clocked tick).
        "OPTIONS": {"MAX_ENTRIES": 2**62},
    }
else:
    raise ValueError(f"CACHE_URL must be redis://, rediss://, unix://, db:// or locmem://, not {CACHE_URL!r}")
CACHES = {"default": {**_cache, "KEY_PREFIX": CACHE_KEY_PREFIX}}
# Proxies whose X-Forwarded-For is believed (addresses or CIDR networks, comma-separated): behind them the
# client address (login throttle, anonymous mutation throttle) is the last address they did not add.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# `collectstatic` writes here (compressed copies too); WhiteNoise serves it. Without a collectstatic
# (`make run`, tests) WhiteNoise finds the files in the apps instead (WHITENOISE_USE_FINDERS).
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)
# Without a collectstatic there is no STATIC_ROOT yet, which is expected here, not worth a warning.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

# --- Auth: django-allauth headless with its JWT token strategy -------------------------------------
HEADLESS_ONLY = True
# allauth's JWT strategy plus the claims the API reads instead of the database (apps/gateway/tokens.py).
HEADLESS_TOKEN_STRATEGY = "apps.gateway.tokens.TokenStrategy"
# HS256 with SECRET_KEY unless an RSA private key is configured (then RS256).
HEADLESS_JWT_PRIVATE_KEY = os.environ.get("JWT_PRIVATE_KEY", "")
HEADLESS_JWT_ALGORITHM = "RS256" if HEADLESS_JWT_PRIVATE_KEY else "HS256"
# Short-lived access tokens (clients refresh them through /_allauth/app/v1/tokens/refresh).
HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN = env_int("JWT_ACCESS_TOKEN_EXPIRES_IN", 900)
# allauth's own endpoints (refresh, sign-out) check a token against its session. The API does not read the
# session: it verifies the token and asks the shared cache whether the session or the user was revoked
# (apps/gateway/revocation.py), so sign-out and deactivation still end a token at once.
HEADLESS_JWT_STATEFUL_VALIDATION_ENABLED = True
# How long a revocation is remembered; a token that lives longer than this is refused outright (minted
# tokens for scripts and the demo included: `mint_token --expires-in`, `seed_demo` mints for 7 days).
AUTH_TOKEN_MAX_LIFETIME_SECONDS = env_int("AUTH_TOKEN_MAX_LIFETIME_SECONDS", 8 * 86400)
# With Redis as the cache, each process answers revocation checks from its own copy, kept current by a
# pub/sub stream (apps/gateway/revocation.py): a revocation reaches the other processes when its message
# arrives, and a process that has not heard from the stream (it pings every PING seconds) for STALE seconds
# reads the cache per request again. Entries read from the cache are re-read after LOCAL seconds.
AUTH_REVOCATION_STREAM = env_bool("AUTH_REVOCATION_STREAM", True)
AUTH_REVOCATION_STREAM_PING_SECONDS = float(os.environ.get("AUTH_REVOCATION_STREAM_PING_SECONDS", "0.5"))
AUTH_REVOCATION_STREAM_STALE_SECONDS = float(os.environ.get("AUTH_REVOCATION_STREAM_STALE_SECONDS", "2"))
AUTH_REVOCATION_LOCAL_SECONDS = float(os.environ.get("AUTH_REVOCATION_LOCAL_SECONDS", "60"))
AUTH_REVOCATION_LOCAL_MAX_ENTRIES = env_int("AUTH_REVOCATION_LOCAL_MAX_ENTRIES", 100_000)
# Headless flows that end in a browser (Discord sign-in) come back to the web app's pages.
HEADLESS_FRONTEND_URLS: dict[str, str] = {"socialaccount_login_error": "/signin/"}
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
# People sign in with Discord (or the sandbox); nobody signs up with a password under /_allauth/.
ACCOUNT_ADAPTER = "apps.web.signin.AccountAdapter"
# Staff second factor (apps/gateway/mfa.py, docs/operations.md): TOTP only, secrets encrypted at rest.
# On by default, so a production that forgets the variable still requires it; set 0 only for local work.
ADMIN_REQUIRE_MFA = env_bool("ADMIN_REQUIRE_MFA", True)
MFA_ADAPTER = "apps.gateway.mfa.MFAAdapter"
MFA_SUPPORTED_TYPES = ["totp"]
MFA_ENCRYPTION_KEY = os.environ.get("MFA_ENCRYPTION_KEY", "")
MFA_TOTP_ISSUER = os.environ.get("MFA_TOTP_ISSUER", "Escrow admin")
SESSION_ENGINE = "django.contrib.sessions.backends.db"
LOGIN_URL = "/signin/"
LOGIN_REDIRECT_URL = "/deals/"

# --- Sign-in with Discord (docs/web.md) -----------------------------------------------------------
# Off until DISCORD_CLIENT_ID and DISCORD_CLIENT_SECRET are set. DISCORD_OAUTH_BASE is where Discord's
# OAuth2 endpoints live (authorize, token, users/@me); tests point it at a local fake.
DISCORD_CLIENT_ID = os.environ.get("DISCORD_CLIENT_ID", "")
DISCORD_CLIENT_SECRET = os.environ.get("DISCORD_CLIENT_SECRET", "")
DISCORD_OAUTH_BASE = os.environ.get("DISCORD_OAUTH_BASE", "https://discord.com/api").rstrip("/")
SOCIALACCOUNT_ADAPTER = "apps.web.signin.SocialAccountAdapter"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_PROVIDERS = {
    "discord": {
        "provider_class": "apps.web.discord_oauth.provider.DiscordProvider",
        "OAUTH_PKCE_ENABLED": True,
        "SCOPE": ["identify"],
        "APPS": (
            [{"client_id": DISCORD_CLIENT_ID, "secret": DISCORD_CLIENT_SECRET, "key": ""}]
            if DISCORD_CLIENT_ID and DISCORD_CLIENT_SECRET
            else []
        ),
    },
}
# The sandbox sign-in (pick or create a demo user, no password) exists for `make run` only: off by default
# in any production configuration, refused there even if switched on, and reported by `check --deploy`.
HTTPS = env_bool("HTTPS", False)
SANDBOX_SIGNIN = env_bool("SANDBOX_SIGNIN", not (HTTPS or os.environ.get("PAYMENTS_PROVIDER", "sandbox") == "live"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.gateway.auth.BearerJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["apps.gateway.parsers.BoundedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["apps.gateway.throttles.MutationRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "apps.gateway.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Escrow API",
    "DESCRIPTION": "Escrow for high-value game-item trades: money is held until the seller delivers.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The Swagger UI and ReDoc from this server's own static files (drf-spectacular-sidecar), no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.gateway.schema.document_plain_routes",
        "apps.gateway.schema.document_problems",
    ],
    # A deal's sides (the caller's `role` on create, `creator_role` on read): one enum, one name.
    "ENUM_NAME_OVERRIDES": {"PartyRoleEnum": ["buyer", "seller"]},
}
# Mutations (POST/PUT/PATCH/DELETE) per caller: generous by default so that load tests and benchmarks
# are not throttled; production sets THROTTLE_MUTATIONS_RATE (e.g. "120/min"); "off" disables it.
_mutations_rate = os.environ.get("THROTTLE_MUTATIONS_RATE", "3000/min")
API_THROTTLE_RATES: dict[str, str | None] = {
    "mutations": None if _mutations_rate.lower() in {"off", "none", "0"} else _mutations_rate,
}
# Staff login attempts (admin login form) per client address and per username; "" disables it.
LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10/min")
# Request bodies above this size are refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024)
# Dispute evidence files: stored under MEDIA_ROOT (never served by URL; staff download them through the
# admin), at most EVIDENCE_MAX_BYTES each.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
EVIDENCE_MAX_BYTES = env_int("EVIDENCE_MAX_BYTES", 5 * 1024 * 1024)

# Idempotency-Key records are kept this long, then purged by the bus worker's tick (checked at most every
# IDEMPOTENCY_PURGE_EVERY_SECONDS); the same key after that is a new request.
IDEMPOTENCY_KEY_TTL_HOURS = float(os.environ.get("IDEMPOTENCY_KEY_TTL_HOURS", "24"))
IDEMPOTENCY_PURGE_EVERY_SECONDS = float(os.environ.get("IDEMPOTENCY_PURGE_EVERY_SECONDS", "60"))
# How often the bus worker deletes the database cache's expired rows (the embedded default's cache).
CACHE_PURGE_EVERY_SECONDS = float(os.environ.get("CACHE_PURGE_EVERY_SECONDS", "60"))

# --- Domain ----------------------------------------------------------------------------------------
PLATFORM_FEE_BPS = env_int("PLATFORM_FEE_BPS", 250)
INSPECTION_PERIOD_HOURS = env_int("INSPECTION_PERIOD_HOURS", 72)
FUNDING_DEADLINE_HOURS = env_int("FUNDING_DEADLINE_HOURS", 24)
ACCEPTANCE_DEADLINE_HOURS = env_int("ACCEPTANCE_DEADLINE_HOURS", 48)
ESCROW_MIN_AMOUNT_MINOR = env_int("ESCROW_MIN_AMOUNT_MINOR", 100)
ESCROW_MAX_AMOUNT_MINOR = env_int("ESCROW_MAX_AMOUNT_MINOR", 100_000_000)
ESCROW_CURRENCIES = env_list("ESCROW_CURRENCIES", "USD")

# --- Payments --------------------------------------------------------------------------------------
PAYMENTS_PROVIDER = os.environ.get("PAYMENTS_PROVIDER", "sandbox")
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")
STRIPE_MAX_AMOUNT_MINOR = env_int("STRIPE_MAX_AMOUNT_MINOR", 1_000_000)
CUSTODIAN_API_BASE = os.environ.get("CUSTODIAN_API_BASE", "")
CUSTODIAN_API_KEY = os.environ.get("CUSTODIAN_API_KEY", "")
CUSTODIAN_WEBHOOK_SECRET = os.environ.get("CUSTODIAN_WEBHOOK_SECRET", "")
TRM_API_BASE = os.environ.get("TRM_API_BASE", "")
TRM_API_KEY = os.environ.get("TRM_API_KEY", "")
CHAINALYSIS_API_BASE = os.environ.get("CHAINALYSIS_API_BASE", "")
CHAINALYSIS_API_KEY = os.environ.get("CHAINALYSIS_API_KEY", "")
# The custodian's wallet set, and USDC on Base as the custodian names it (token id) and on chain (address).
CUSTODIAN_WALLET_SET_ID = os.environ.get("CUSTODIAN_WALLET_SET_ID", "")
CUSTODIAN_USDC_TOKEN_ID = os.environ.get("CUSTODIAN_USDC_TOKEN_ID", "")
CUSTODIAN_USDC_TOKEN_ADDRESS = os.environ.get(
    "CUSTODIAN_USDC_TOKEN_ADDRESS", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
)
# The 32-byte entity secret (hex) that the custodian wants RSA-OAEP-encrypted, freshly, in every write. Never logged.
CUSTODIAN_ENTITY_SECRET = os.environ.get("CUSTODIAN_ENTITY_SECRET", "")
# Provider HTTP clients: one request's time limit (seconds), and the longest Retry-After a client waits out
# itself before it leaves the retry to the bus (docs/payments.md).
STRIPE_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "20"))
CUSTODIAN_TIMEOUT_SECONDS = float(os.environ.get("CUSTODIAN_TIMEOUT_SECONDS", "15"))
SCREENING_TIMEOUT_SECONDS = float(os.environ.get("SCREENING_TIMEOUT_SECONDS", "10"))
PROVIDER_RETRY_AFTER_MAX_SECONDS = float(os.environ.get("PROVIDER_RETRY_AFTER_MAX_SECONDS", "5"))
# The sandbox provider signs its own webhooks; derived from SECRET_KEY unless set.
SANDBOX_WEBHOOK_SECRET = os.environ.get("SANDBOX_WEBHOOK_SECRET", "")

# --- Notifications ---------------------------------------------------------------------------------
DISCORD_BOT_TOKEN = os.environ.get("DISCORD_BOT_TOKEN", "")
DISCORD_API_BASE = os.environ.get("DISCORD_API_BASE", "")
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
# Delivery of DMs (docs/notifications.md): attempts before a notification is dead, backoff between
# transient failures, one send's time limit, and whether the committing thread sends right away.
NOTIFY_MAX_ATTEMPTS = env_int("NOTIFY_MAX_ATTEMPTS", 5)
NOTIFY_RETRY_BASE_SECONDS = float(os.environ.get("NOTIFY_RETRY_BASE_SECONDS", "2.0"))
NOTIFY_RETRY_MAX_SECONDS = float(os.environ.get("NOTIFY_RETRY_MAX_SECONDS", "900"))
NOTIFY_DELIVER_ON_COMMIT = env_bool("NOTIFY_DELIVER_ON_COMMIT", True)
DISCORD_SEND_TIMEOUT_SECONDS = float(os.environ.get("DISCORD_SEND_TIMEOUT_SECONDS", "45"))
# Reminders before a deadline (once each): how many hours before it, and how often the worker looks.
REMINDER_ACCEPTANCE_HOURS_BEFORE = env_int("REMINDER_ACCEPTANCE_HOURS_BEFORE", 12)
REMINDER_FUNDING_HOURS_BEFORE = env_int("REMINDER_FUNDING_HOURS_BEFORE", 6)
REMINDER_INSPECTION_HOURS_BEFORE = env_int("REMINDER_INSPECTION_HOURS_BEFORE", 12)
REMINDER_SCAN_SECONDS = float(os.environ.get("REMINDER_SCAN_SECONDS", "60"))
# The interactions endpoint (docs/discord.md): off (404) without the application's public key (hex).
DISCORD_PUBLIC_KEY = os.environ.get("DISCORD_PUBLIC_KEY", "")
DISCORD_APPLICATION_ID = os.environ.get("DISCORD_APPLICATION_ID", "")
# A signed interaction older (or newer) than this is refused as a replay.
DISCORD_SIGNATURE_MAX_AGE_SECONDS = env_int("DISCORD_SIGNATURE_MAX_AGE_SECONDS", 300)
# How long an interaction waits for the read model before it defers and follows up (Discord allows 3 s).
DISCORD_REPLY_WAIT_SECONDS = float(os.environ.get("DISCORD_REPLY_WAIT_SECONDS", "1.5"))
# A deferred interaction's follow-up waits at most this long for what it shows (the read model, the checkout link).
DISCORD_FOLLOWUP_WAIT_SECONDS = float(os.environ.get("DISCORD_FOLLOWUP_WAIT_SECONDS", "60"))
DISCORD_HTTP_TIMEOUT_SECONDS = float(os.environ.get("DISCORD_HTTP_TIMEOUT_SECONDS", "10"))

# --- Messaging -------------------------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
SCHEMA_REGISTRY_URL = os.environ.get("SCHEMA_REGISTRY_URL", "")
# Production Kafka wants the idempotent producer (per-partition order across retries); the Tansu test
# broker refuses it, so tests and the dev broker turn it off.
KAFKA_ENABLE_IDEMPOTENCE = env_bool("KAFKA_ENABLE_IDEMPOTENCE", True)
KAFKA_RELAY_BATCH_SIZE = env_int("KAFKA_RELAY_BATCH_SIZE", 1000)
KAFKA_LINGER_MS = env_int("KAFKA_LINGER_MS", 5)
KAFKA_CONSUMER_MAX_ATTEMPTS = env_int("KAFKA_CONSUMER_MAX_ATTEMPTS", 3)
# Consumer group liveness: a member that stops heartbeating for this long is replaced.
KAFKA_SESSION_TIMEOUT_MS = env_int("KAFKA_SESSION_TIMEOUT_MS", 10_000)
KAFKA_HEARTBEAT_INTERVAL_MS = env_int("KAFKA_HEARTBEAT_INTERVAL_MS", 3_000)
KAFKA_TOPIC_PARTITIONS = env_int("KAFKA_TOPIC_PARTITIONS", 12)
KAFKA_REPLICATION_FACTOR = env_int("KAFKA_REPLICATION_FACTOR", 1)
# With acks=all a write needs this many in-sync replicas (production: 3 replicas, 2 in sync).
KAFKA_MIN_INSYNC_REPLICAS = env_int("KAFKA_MIN_INSYNC_REPLICAS", 1)
# How every Kafka client (relay, consumers, admin) connects: PLAINTEXT for the local broker; production runs
# SASL_SSL with SCRAM-SHA-512, verifying the brokers' certificates against KAFKA_SSL_CAFILE.
KAFKA_SECURITY_PROTOCOL = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
KAFKA_SASL_MECHANISM = os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
KAFKA_SASL_USERNAME = os.environ.get("KAFKA_SASL_USERNAME", "")
KAFKA_SASL_PASSWORD = os.environ.get("KAFKA_SASL_PASSWORD", "")
KAFKA_SSL_CAFILE = os.environ.get("KAFKA_SSL_CAFILE", "")
# Deliver outbox messages to in-process subscribers right after the writing transaction commits, in
# the committing thread. Off: only a bus worker (`manage.py run_bus`, or the one `manage.py serve`
# starts) delivers them, woken by the commit.
BUS_INLINE_DISPATCH = env_bool("BUS_INLINE_DISPATCH", True)
# Subscribers fed from the outbox in this deployment; an app consumed from Kafka is left out here.
BUS_OUTBOX_SUBSCRIBERS = env_list("BUS_OUTBOX_SUBSCRIBERS", "escrow,payments,projections,notifications")
BUS_MAX_ATTEMPTS = env_int("BUS_MAX_ATTEMPTS", 4)
BUS_RETRY_BASE_SECONDS = float(os.environ.get("BUS_RETRY_BASE_SECONDS", "0.05"))
BUS_POLL_SECONDS = float(os.environ.get("BUS_POLL_SECONDS", "1.0"))
BUS_BATCH_SIZE = env_int("BUS_BATCH_SIZE", 200)
# Messages a subscriber applies in one transaction (one checkpoint write, one dedupe read and insert).
BUS_APPLY_BATCH_SIZE = env_int("BUS_APPLY_BATCH_SIZE", 50)
# The REST API never waits by default: a client that wants to asks `Prefer: wait=N` (RFC 7240), capped by
# this many seconds (apps/gateway/waiting.py, docs/api.md "Waiting for the read model").
PREFER_WAIT_MAX_SECONDS = float(os.environ.get("PREFER_WAIT_MAX_SECONDS", "10"))


# --- Tracing (OpenTelemetry; docs/performance.md) ---------------------------------------------------
# Off: no spans, and the W3C traceparent still travels HTTP -> outbox -> subscribers -> Kafka by hand.
TRACING_ENABLED = env_bool("TRACING_ENABLED", False)
# Where spans go: "otlp" (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, the default when that is set),
# "console" (stdout, the default otherwise) or "none" (real ids and spans, exported nowhere).
TRACING_EXPORTER = (
    (
        os.environ.get("TRACING_EXPORTER")
        or (
            "otlp"
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            else "console"
        )
    )
    .strip()
    .lower()
)
if TRACING_EXPORTER not in {"otlp", "console", "none"}:
    raise ValueError(f"TRACING_EXPORTER must be otlp, console or none, not {TRACING_EXPORTER!r}")
# Empty: "escrow" for the web process, "escrow-<command>" for other manage.py commands
# ("escrow-consume-payments"), so each process of a split deployment is its own service.
TRACING_SERVICE_NAME = os.environ.get("OTEL_SERVICE_NAME", "")

# Who may scrape /api/v1/metrics: set, a client sending `Authorization: Bearer <METRICS_TOKEN>`; unset,
# only clients on this host (behind a reverse proxy on the same host, set it: the proxy is loopback).
# METRICS_TOKEN_FILE names a file holding it instead (a container secret shared with Prometheus).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "") or (
    Path(os.environ["METRICS_TOKEN_FILE"]).read_text().strip() if os.environ.get("METRICS_TOKEN_FILE") else ""
)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "apps.outbox.context.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    SECURE_REFERRER_POLICY = "same-origin"
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Served only over HTTPS, on a domain of its own: browsers may preload HSTS for it.
    SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
