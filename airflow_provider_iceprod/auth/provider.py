"""TokenProvider: what the transport asks for a bearer token, sync or async.

Life of a token, for one connection in one process:

1. A cached access token is reused until ``lead_time`` (120 s) before it expires.
2. Otherwise one caller refreshes, under the process-wide lock for the credential (threads and
   coroutines), and for refresh tokens also under a per-host file lock; the others wait and then reuse.
   Before refreshing, it reads the overlay: when another process (on any host) already rotated and
   stored a still-fresh access token with the newest refresh token, that token is taken over and
   nothing is refreshed (a burst of new task processes costs one grant, not one each).
3. The refresh token used is the newest of: the connection's, the overlay's (when it descends from the
   connection's token: same ``fingerprint_of_base``, higher ``generation``; no clocks compared) and
   the one this process last received. A failed overlay read is a transient error.
4. A rotated refresh token is written to the overlay (:mod:`~airflow_provider_iceprod.auth.state`)
   before the new access token is used. If that fails, the token lives in this process only and
   :attr:`TokenStatus.unsaved_rotation` says so (the keep-alive task then fails).
5. ``invalid_grant``: re-read the overlay (another worker may have rotated: take over its access
   token when it is fresh) and then the connection (someone may have logged in again), and retry with a
   token not tried yet (at most ``max_reread_retries`` times); then :class:`IceProdAuthError` naming
   the login command. A forced refresh (the API rejected the token) never takes over a shared token.

Nothing here ever starts an interactive login. Every token is given to the secret masker first,
through :data:`~airflow_provider_iceprod.auth.masking.MASKS` (bounded per credential, off the loop).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.auth.cache import TOKEN_CACHE, CacheEntry, CacheKey, TokenCache
from airflow_provider_iceprod.auth.candidates import (
    Candidate,
    choose,
    new_from_overlay,
    overlay_applies,
    remember,
    rotation,
)
from airflow_provider_iceprod.auth.locks import afile_lock, file_lock, lock_path
from airflow_provider_iceprod.auth.masking import MASKS
from airflow_provider_iceprod.auth.oidc import OIDCClient
from airflow_provider_iceprod.auth.state import TokenStateStore, default_state_store
from airflow_provider_iceprod.auth.status import TokenStatus
from airflow_provider_iceprod.auth.tokens import (
    DEFAULT_LEAD_TIME,
    AccessToken,
    GrantResult,
    TokenState,
    decode_claims,
    fingerprint,
    identity_from_claims,
    login_command,
)
from airflow_provider_iceprod.exceptions import IceProdAuthError
from airflow_provider_iceprod.loop_guard import refuse_running_loop
from airflow_provider_iceprod.settings import ConnectionSettings

if TYPE_CHECKING:
    from airflow_provider_iceprod.models import Identity
    from airflow_provider_iceprod.retry import RetrySettings

log = logging.getLogger(__name__)

# rest-tools logs whole token responses at DEBUG: keep it quiet wherever this provider is used.
_rest_tools_log = logging.getLogger("rest_tools")
if _rest_tools_log.level < logging.WARNING:
    _rest_tools_log.setLevel(logging.WARNING)

#: Waits before each re-read of the overlay after ``invalid_grant`` (another worker's write may be in
#: flight), each stretched by up to 50 % random jitter so that racing workers spread out.
REREAD_DELAYS = (0.05, 0.25, 0.5, 1.0, 2.0)


def read_connection_settings(conn_id: str) -> ConnectionSettings:
    """The connection as Airflow resolves it here (Task SDK, environment, secrets backends, DB)."""
    from airflow.sdk import BaseHook

    return ConnectionSettings.from_connection(BaseHook.get_connection(conn_id))


async def aread_connection_settings(conn_id: str) -> ConnectionSettings:
    from airflow.sdk import BaseHook

    conn = await BaseHook.aget_connection(conn_id)
    extra = await conn.aextra_dejson() if hasattr(conn, "aextra_dejson") else conn.extra_dejson
    return ConnectionSettings.from_connection(conn, extra)


def _is_invalid_grant(exc: IceProdAuthError) -> bool:
    return isinstance(exc.body, dict) and exc.body.get("error") == "invalid_grant"


class TokenProvider:
    """Bearer tokens for one IceProd connection. Cheap to build (no I/O); share-nothing by design:
    all state lives in the process-wide cache, so many providers for one connection cost one grant.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        retry: RetrySettings,
        state_store: TokenStateStore | None = None,
        lead_time: float = DEFAULT_LEAD_TIME,
        cache: TokenCache | None = None,
        max_reread_retries: int = 8,
        reload: Callable[[], ConnectionSettings] | None = None,
        areload: Callable[[], Awaitable[ConnectionSettings]] | None = None,
    ) -> None:
        self.retry = retry
        self.lead_time = lead_time
        self.max_reread_retries = max_reread_retries
        self._cache = cache if cache is not None else TOKEN_CACHE
        self._use(settings)
        if state_store is None and self.kind == "refresh_token":
            state_store = default_state_store(settings.conn_id, settings.oauth_url, settings.client_id)
        self.state_store = state_store
        conn_id = settings.conn_id
        self._reload = reload or (lambda: read_connection_settings(conn_id))
        self._areload = areload or (lambda: aread_connection_settings(conn_id))
        self._oidc: OIDCClient | None = None

    def _use(self, settings: ConnectionSettings) -> None:
        """Adopt ``settings`` (at start, or after a new login was found in the connection)."""
        self.settings = settings
        self.kind = settings.credential_kind
        base = settings.client_secret if self.kind == "client_credentials" else settings.refresh_token
        self._base_fingerprint = fingerprint(settings.refresh_token)
        self.key: CacheKey = (
            settings.oauth_url,
            settings.client_id,
            fingerprint(f"{self.kind}:{base or ''}"),
        )
        self._base_masked = False
        self._oidc = None

    def __repr__(self) -> str:
        return f"TokenProvider(conn_id={self.settings.conn_id!r}, credential={self.kind!r})"

    # -- public API -------------------------------------------------------------------------------

    def _cached_value(self, force_refresh: bool) -> str | None:
        """The cached access token while it is fresh, unless a refresh is forced."""
        if force_refresh:
            return None
        cached = self._cache.fresh(self.key, self.lead_time)
        return None if cached is None else cached.value

    def get_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; refreshes when needed (or when ``force_refresh``)."""
        requested = time.monotonic()
        cached = self._cached_value(force_refresh)
        if cached is not None:
            return cached
        refuse_running_loop("TokenProvider.get_token()")  # a refresh would block the loop
        self._check_credentials()
        self._mask_base()
        with self._cache.locked(self.key) as entry:
            reused = self._reusable(entry, force_refresh, requested)
            if reused is not None:
                return reused.value
            if self.kind == "client_credentials":
                self._accept_access(entry, self.oidc.client_credentials(), "client_credentials")
            else:
                with file_lock(self._lock_path()):
                    self._refresh_sync(entry, share=not force_refresh)
            assert entry.access is not None
            return entry.access.value

    async def aget_token(self, *, force_refresh: bool = False) -> str:
        """Async :meth:`get_token`: never blocks the event loop, also while waiting for a lock."""
        requested = time.monotonic()
        cached = self._cached_value(force_refresh)
        if cached is not None:
            return cached
        self._check_credentials()
        await self._amask_base()
        async with self._cache.alocked(self.key) as entry:
            reused = self._reusable(entry, force_refresh, requested)
            if reused is not None:
                return reused.value
            if self.kind == "client_credentials":
                grant = await self.oidc.aclient_credentials()
                await self._amask_grant(grant)
                self._accept_access(entry, grant, "client_credentials", masked=True)
            else:
                async with afile_lock(self._lock_path()):
                    await self._refresh_async(entry, share=not force_refresh)
            assert entry.access is not None
            return entry.access.value

    def identity(self) -> Identity:
        """Who the current access token belongs to (``preferred_username``, ``groups``)."""
        return identity_from_claims(decode_claims(self.get_token()))

    async def aidentity(self) -> Identity:
        return identity_from_claims(decode_claims(await self.aget_token()))

    def invalidate(self) -> None:
        """Forget the cached access token (e.g. after the API said ``authentication failed``)."""
        self._cache.invalidate(self.key)

    def status(self) -> TokenStatus:
        """A secret-free summary of the credential, from a valid access token (refreshes if needed)."""
        self.get_token()
        return TokenStatus.of(self.settings, self._cache.entry(self.key))

    async def astatus(self) -> TokenStatus:
        await self.aget_token()
        return TokenStatus.of(self.settings, self._cache.entry(self.key))

    @property
    def oidc(self) -> OIDCClient:
        if self._oidc is None:
            self._oidc = OIDCClient(
                self.settings.oauth_url,
                self.settings.client_id,
                retry=self.retry,
                client_secret=self.settings.client_secret,
                conn_id=self.settings.conn_id,
            )
        return self._oidc

    # -- shared steps -----------------------------------------------------------------------------

    def _check_credentials(self) -> None:
        if self.kind == "none":
            conn_id = self.settings.conn_id
            raise IceProdAuthError(
                f"IceProd connection {conn_id!r} has no credentials: no refresh_token extra and no client "
                f"secret in the password field. Run `{login_command(conn_id)}` (or set the password for a "
                "service account)."
            )

    def _reusable(self, entry: CacheEntry, force: bool, requested: float) -> AccessToken | None:
        """Double check under the lock: someone else may have refreshed while we waited."""
        token = entry.access
        if token is None or not token.is_fresh(self.lead_time):
            return None
        if force and entry.refreshed_at_monotonic <= requested:
            return None
        return token

    def _lock_path(self) -> Any:
        return lock_path("|".join(self.key))

    def _mask_base(self) -> None:
        if not self._base_masked:
            MASKS.register(("base", self.key), [self.settings.refresh_token, self.settings.client_secret])
            self._base_masked = True

    async def _amask_base(self) -> None:
        if not self._base_masked:
            secrets = [self.settings.refresh_token, self.settings.client_secret]
            await MASKS.aregister(("base", self.key), secrets)
            self._base_masked = True

    def _mask_grant(self, grant: GrantResult) -> None:
        MASKS.register(self.key, grant.secrets())

    async def _amask_grant(self, grant: GrantResult) -> None:
        await MASKS.aregister(self.key, grant.secrets())

    def _accept_access(
        self, entry: CacheEntry, grant: GrantResult, source: str, *, masked: bool = False
    ) -> None:
        if not masked:
            self._mask_grant(grant)
        if grant.access_token is None:  # pragma: no cover - the OIDC client insists on one
            raise IceProdAuthError(f"IceProd connection {self.settings.conn_id!r}: no access token returned.")
        entry.access = grant.access_token
        entry.refreshed_at_monotonic = time.monotonic()
        entry.last_refresh_at = time.time()
        entry.source = source
        entry.grants += 1

    def _adopt_shared(self, entry: CacheEntry, overlay: TokenState | None) -> list[str]:
        """Take over the fresh access token another process stored with the newest refresh token.

        Returns the secrets to mask before use; empty when there is nothing to take over (no grant
        is saved by then, and the caller refreshes).
        """
        if overlay is None or not overlay_applies(self.settings, self._base_fingerprint, overlay):
            return []
        if overlay.generation < entry.refresh_generation:  # older than what this process holds
            return []
        access = overlay.shared_access(self.lead_time)
        if access is None or fingerprint(access.value) == entry.rejected:
            return []
        remember(entry, Candidate.of_overlay(overlay), None)
        entry.access = access
        entry.refreshed_at_monotonic = time.monotonic()
        entry.source = "overlay"
        entry.adopted += 1
        log.debug(
            "IceProd connection %r: took over the access token another process stored", self.settings.conn_id
        )
        return [overlay.refresh_token, access.value]

    def _new_login(self, fresh: ConnectionSettings | None, tried: set[str]) -> Candidate | None:
        """After ``invalid_grant``: a new login in the connection (``airflow-iceprod login`` ran)."""
        if fresh is None or fresh.credential_kind != "refresh_token" or not fresh.refresh_token:
            return None
        if fresh.refresh_token in tried or fresh.refresh_token == self.settings.refresh_token:
            return None
        log.info("IceProd connection %r: found a new login in the connection; using it", fresh.conn_id)
        self._use(fresh)
        return Candidate(fresh.refresh_token, fresh.refresh_token_saved_at or 0.0, "connection")

    def _reload_settings(self) -> ConnectionSettings | None:
        try:
            return self._reload()
        except Exception as exc:
            log.debug("IceProd: could not re-read connection %r: %s", self.settings.conn_id, exc)
            return None

    async def _areload_settings(self) -> ConnectionSettings | None:
        try:
            return await self._areload()
        except Exception as exc:
            log.debug("IceProd: could not re-read connection %r: %s", self.settings.conn_id, exc)
            return None

    def _saved(self, entry: CacheEntry, ok: bool) -> None:
        entry.unsaved_rotation = not ok
        if not ok:
            log.error(
                "IceProd connection %r: the issuer rotated the refresh token and it could not be saved "
                "anywhere; it lives in this process only. Run `airflow-iceprod refresh --conn-id %s` "
                "where Airflow's DB is reachable, or log in again if this process ends first.",
                self.settings.conn_id,
                self.settings.conn_id,
            )

    def _give_up(self, exc: IceProdAuthError, attempts: int) -> IceProdAuthError:
        if attempts == 0:
            return exc
        return IceProdAuthError(
            f"{exc.message} (also after re-reading the token-state overlay and the connection "
            f"{attempts} time(s): no other worker holds a newer refresh token, and there is no new login)",
            status_code=exc.status_code,
            iceprod_message=exc.iceprod_message,
            body=exc.body,
        )

    # -- refresh-token grants ---------------------------------------------------------------------

    def _refresh_sync(self, entry: CacheEntry, *, share: bool) -> None:
        store = self.state_store
        overlay = store.load() if store is not None else None
        candidate = choose(self.settings, self._base_fingerprint, entry, overlay)
        tried, attempts = set[str](), 0
        while not (share and self._took_over(entry, overlay)):
            tried.add(candidate.token)
            try:
                grant = self.oidc.refresh(candidate.token)
            except IceProdAuthError as exc:
                attempts = self._count_invalid_grant(exc, attempts)
                overlay = self._reread_sync(store, tried) if store is not None else None
                newer = new_from_overlay(self.settings, overlay, tried)
                candidate = self._retry_with(
                    exc, attempts, newer or self._new_login(self._reload_settings(), tried)
                )
                continue
            self._mask_grant(grant)
            rotated = rotation(self.settings, self._base_fingerprint, candidate, grant)
            remember(entry, candidate, rotated)  # memory first: it cannot fail
            if rotated is not None:
                self._saved(entry, store is not None and store.save(rotated))
            self._accept_access(entry, grant, candidate.source, masked=True)
            return

    async def _refresh_async(self, entry: CacheEntry, *, share: bool) -> None:
        store = self.state_store
        overlay = await store.aload() if store is not None else None
        candidate = choose(self.settings, self._base_fingerprint, entry, overlay)
        tried, attempts = set[str](), 0
        while not (share and await self._atook_over(entry, overlay)):
            tried.add(candidate.token)
            try:
                grant = await self.oidc.arefresh(candidate.token)
            except IceProdAuthError as exc:
                attempts = self._count_invalid_grant(exc, attempts)
                overlay = await self._reread_async(store, tried) if store is not None else None
                newer = new_from_overlay(self.settings, overlay, tried)
                newer = newer or self._new_login(await self._areload_settings(), tried)
                candidate = self._retry_with(exc, attempts, newer)
                continue
            await self._amask_grant(grant)
            rotated = rotation(self.settings, self._base_fingerprint, candidate, grant)
            remember(entry, candidate, rotated)
            if rotated is not None:
                self._saved(entry, store is not None and await store.asave(rotated))
            self._accept_access(entry, grant, candidate.source, masked=True)
            return

    def _took_over(self, entry: CacheEntry, overlay: TokenState | None) -> bool:
        adopted = self._adopt_shared(entry, overlay)
        MASKS.register(self.key, adopted)
        return bool(adopted)

    async def _atook_over(self, entry: CacheEntry, overlay: TokenState | None) -> bool:
        adopted = self._adopt_shared(entry, overlay)
        if adopted:  # masked before use; no thread hop when there is nothing to take over
            await MASKS.aregister(self.key, adopted)
        return bool(adopted)

    def _count_invalid_grant(self, exc: IceProdAuthError, attempts: int) -> int:
        """After ``invalid_grant``, one more re-read is allowed; anything else is final."""
        if not _is_invalid_grant(exc) or attempts >= self.max_reread_retries:
            raise self._give_up(exc, attempts) from None
        return attempts + 1

    def _retry_with(self, exc: IceProdAuthError, attempts: int, newer: Candidate | None) -> Candidate:
        if newer is None:
            raise self._give_up(exc, attempts) from None
        log.info("IceProd: retrying the refresh with a newer token (%s)", newer.source)
        return newer

    def _reread_sync(self, store: TokenStateStore, tried: set[str]) -> TokenState | None:
        """The overlay, once it holds a refresh token not tried yet (another worker's write may lag)."""
        for delay in REREAD_DELAYS:
            if delay:
                time.sleep(delay * (1 + random.random() / 2))
            overlay = store.load()
            if new_from_overlay(self.settings, overlay, tried) is not None:
                return overlay
        return None

    async def _reread_async(self, store: TokenStateStore, tried: set[str]) -> TokenState | None:
        for delay in REREAD_DELAYS:
            if delay:
                await asyncio.sleep(delay * (1 + random.random() / 2))
            overlay = await store.aload()
            if new_from_overlay(self.settings, overlay, tried) is not None:
                return overlay
        return None
