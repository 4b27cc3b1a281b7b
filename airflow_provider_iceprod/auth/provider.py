"""TokenProvider: what the transport asks for a bearer token, sync or async.

Life of a token, for one connection in one process:

1. A cached access token is reused until ``lead_time`` (120 s) before it expires.
2. Otherwise one caller refreshes, under the process-wide lock for the credential (threads and
   coroutines), and for refresh tokens also under a per-host file lock; the others wait and then reuse.
3. The refresh token used is the newest of: the connection's, the overlay Variable's (when newer than
   the connection's ``refresh_token_saved_at``) and the one this process last received.
4. A rotated refresh token is written to the overlay at once, before the new access token is used.
5. ``invalid_grant``: re-read the overlay (another worker may have rotated) and retry with a token not
   tried yet (at most ``max_reread_retries`` times, each re-read waiting at most ~4 s for a new token);
   then :class:`IceProdAuthError` naming the login command.

Nothing here ever starts an interactive login. Every token is given to the secret masker first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.auth.cache import TOKEN_CACHE, CacheEntry, CacheKey, TokenCache
from airflow_provider_iceprod.auth.locks import afile_lock, file_lock, lock_path
from airflow_provider_iceprod.auth.oidc import OIDCClient
from airflow_provider_iceprod.auth.state import TokenStateStore, VariableTokenStateStore
from airflow_provider_iceprod.auth.tokens import (
    DEFAULT_LEAD_TIME,
    AccessToken,
    GrantResult,
    TokenState,
    amask_token,
    decode_claims,
    fingerprint,
    identity_from_claims,
    login_command,
    mask_token,
)
from airflow_provider_iceprod.exceptions import IceProdAuthError
from airflow_provider_iceprod.loop_guard import refuse_running_loop

if TYPE_CHECKING:
    from airflow_provider_iceprod.models import Identity
    from airflow_provider_iceprod.retry import RetrySettings
    from airflow_provider_iceprod.settings import ConnectionSettings

log = logging.getLogger(__name__)

# rest-tools logs whole token responses at DEBUG: keep it quiet wherever this provider is used.
_rest_tools_log = logging.getLogger("rest_tools")
if _rest_tools_log.level < logging.WARNING:
    _rest_tools_log.setLevel(logging.WARNING)

#: Waits before each re-read of the overlay after ``invalid_grant`` (another worker's write may be in
#: flight), each stretched by up to 50 % random jitter so that racing workers spread out.
REREAD_DELAYS = (0.05, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class _Candidate:
    token: str = field(repr=False)
    saved_at: float
    source: str  # connection | overlay | memory


@dataclass(frozen=True)
class TokenStatus:
    """What ``airflow-iceprod status`` and the keep-alive DAG report. Holds no secret."""

    conn_id: str
    issuer: str
    client_id: str
    credential: str  # refresh_token | client_credentials | none
    username: str
    groups: tuple[str, ...]
    access_expires_at: float | None
    refresh_source: str  # connection | overlay | memory | "" (client credentials)
    refresh_saved_at: float | None  # when the refresh token in use was issued (login or rotation)
    login_at: float | None  # the connection's refresh_token_saved_at (when `login` ran)
    last_refresh_at: float | None
    grants_in_process: int


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
    ) -> None:
        self.settings = settings
        self.retry = retry
        self.lead_time = lead_time
        self.max_reread_retries = max_reread_retries
        self._cache = cache if cache is not None else TOKEN_CACHE
        self.kind = settings.credential_kind
        base = settings.client_secret if self.kind == "client_credentials" else settings.refresh_token
        self._base_fingerprint = fingerprint(settings.refresh_token)
        self.key: CacheKey = (
            settings.oauth_url,
            settings.client_id,
            fingerprint(f"{self.kind}:{base or ''}"),
        )
        if state_store is None and self.kind == "refresh_token":
            state_store = VariableTokenStateStore(settings.conn_id)
        self.state_store = state_store
        self._oidc: OIDCClient | None = None
        self._base_masked = False

    def __repr__(self) -> str:
        return f"TokenProvider(conn_id={self.settings.conn_id!r}, credential={self.kind!r})"

    # -- public API -------------------------------------------------------------------------------

    def get_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; refreshes when needed (or when ``force_refresh``)."""
        refuse_running_loop("TokenProvider.get_token()")
        requested = time.monotonic()
        if not force_refresh:
            cached = self._cache.fresh(self.key, self.lead_time)
            if cached is not None:
                return cached.value
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
                    self._refresh_sync(entry)
            assert entry.access is not None
            return entry.access.value

    async def aget_token(self, *, force_refresh: bool = False) -> str:
        """Async :meth:`get_token`: never blocks the event loop, also while waiting for a lock."""
        requested = time.monotonic()
        if not force_refresh:
            cached = self._cache.fresh(self.key, self.lead_time)
            if cached is not None:
                return cached.value
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
                    await self._refresh_async(entry)
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
        return self._status(self._cache.entry(self.key))

    async def astatus(self) -> TokenStatus:
        await self.aget_token()
        return self._status(self._cache.entry(self.key))

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
            mask_token(self.settings.refresh_token)
            mask_token(self.settings.client_secret)
            self._base_masked = True

    async def _amask_base(self) -> None:
        if not self._base_masked:
            await amask_token(self.settings.refresh_token)
            await amask_token(self.settings.client_secret)
            self._base_masked = True

    @staticmethod
    def _mask_grant(grant: GrantResult) -> None:
        for secret in grant.secrets():
            mask_token(secret)

    @staticmethod
    async def _amask_grant(grant: GrantResult) -> None:
        for secret in grant.secrets():
            await amask_token(secret)

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

    def _overlay_applies(self, state: TokenState | None) -> bool:
        s = self.settings
        if state is None or state.issuer != s.oauth_url or state.client_id != s.client_id:
            return False
        if s.refresh_token_saved_at is None:
            return state.fingerprint_of_base == self._base_fingerprint or not s.refresh_token
        return state.saved_at > s.refresh_token_saved_at

    def _choose(self, entry: CacheEntry, overlay: TokenState | None) -> _Candidate:
        """The newest refresh token known; ties prefer memory, then overlay, then connection."""
        candidates: list[_Candidate] = []
        if self.settings.refresh_token:
            candidates.append(
                _Candidate(
                    self.settings.refresh_token, self.settings.refresh_token_saved_at or 0.0, "connection"
                )
            )
        if overlay is not None and self._overlay_applies(overlay):
            candidates.append(_Candidate(overlay.refresh_token, overlay.saved_at, "overlay"))
        if entry.refresh_token:
            candidates.append(_Candidate(entry.refresh_token, entry.refresh_saved_at or 0.0, "memory"))
        rank = {"connection": 0, "overlay": 1, "memory": 2}
        return max(candidates, key=lambda c: (c.saved_at, rank[c.source]))

    def _new_from_overlay(self, overlay: TokenState | None, tried: set[str]) -> _Candidate | None:
        s = self.settings
        if overlay is None or overlay.issuer != s.oauth_url or overlay.client_id != s.client_id:
            return None
        if overlay.refresh_token in tried:
            return None
        return _Candidate(overlay.refresh_token, overlay.saved_at, "overlay")

    def _rotation(self, used: _Candidate, grant: GrantResult) -> TokenState | None:
        """The state to persist when the issuer rotated the refresh token, else None."""
        if not grant.refresh_token or grant.refresh_token == used.token:
            return None
        return TokenState(
            refresh_token=grant.refresh_token,
            saved_at=time.time(),
            issuer=self.settings.oauth_url,
            client_id=self.settings.client_id,
            fingerprint_of_base=self._base_fingerprint,
        )

    def _remember(self, entry: CacheEntry, used: _Candidate, rotated: TokenState | None) -> None:
        if rotated is not None:
            entry.refresh_token, entry.refresh_saved_at = rotated.refresh_token, rotated.saved_at
        else:
            entry.refresh_token, entry.refresh_saved_at = used.token, used.saved_at

    def _give_up(self, exc: IceProdAuthError, attempts: int) -> IceProdAuthError:
        if attempts == 0:
            return exc
        return IceProdAuthError(
            f"{exc.message} (also after re-reading the token-state overlay {attempts} time(s): no other "
            "worker holds a newer refresh token)",
            status_code=exc.status_code,
            iceprod_message=exc.iceprod_message,
            body=exc.body,
        )

    def _status(self, entry: CacheEntry) -> TokenStatus:
        access = entry.access
        ident = identity_from_claims(access.claims) if access is not None else None
        return TokenStatus(
            conn_id=self.settings.conn_id,
            issuer=self.settings.oauth_url,
            client_id=self.settings.client_id,
            credential=self.kind,
            username=ident.username if ident else "",
            groups=ident.groups if ident else (),
            access_expires_at=access.expires_at if access is not None else None,
            refresh_source=entry.source if self.kind == "refresh_token" else "",
            refresh_saved_at=entry.refresh_saved_at if self.kind == "refresh_token" else None,
            login_at=self.settings.refresh_token_saved_at,
            last_refresh_at=entry.last_refresh_at,
            grants_in_process=entry.grants,
        )

    # -- refresh-token grants ---------------------------------------------------------------------

    def _refresh_sync(self, entry: CacheEntry) -> None:
        store = self.state_store
        candidate = self._choose(entry, store.load() if store is not None else None)
        tried: set[str] = set()
        attempts = 0
        while True:
            tried.add(candidate.token)
            try:
                grant = self.oidc.refresh(candidate.token)
            except IceProdAuthError as exc:
                if not _is_invalid_grant(exc) or store is None or attempts >= self.max_reread_retries:
                    raise self._give_up(exc, attempts) from None
                attempts += 1
                newer = self._reread_sync(store, tried)
                if newer is None:
                    raise self._give_up(exc, attempts) from None
                log.info("IceProd: refresh token was rotated by another worker; retrying with the overlay's")
                candidate = newer
                continue
            self._mask_grant(grant)
            rotated = self._rotation(candidate, grant)
            self._remember(entry, candidate, rotated)  # memory first: it cannot fail
            if rotated is not None and store is not None:
                store.save(rotated)
            self._accept_access(entry, grant, candidate.source, masked=True)
            return

    async def _refresh_async(self, entry: CacheEntry) -> None:
        store = self.state_store
        candidate = self._choose(entry, await store.aload() if store is not None else None)
        tried: set[str] = set()
        attempts = 0
        while True:
            tried.add(candidate.token)
            try:
                grant = await self.oidc.arefresh(candidate.token)
            except IceProdAuthError as exc:
                if not _is_invalid_grant(exc) or store is None or attempts >= self.max_reread_retries:
                    raise self._give_up(exc, attempts) from None
                attempts += 1
                newer = await self._reread_async(store, tried)
                if newer is None:
                    raise self._give_up(exc, attempts) from None
                log.info("IceProd: refresh token was rotated by another worker; retrying with the overlay's")
                candidate = newer
                continue
            await self._amask_grant(grant)
            rotated = self._rotation(candidate, grant)
            self._remember(entry, candidate, rotated)
            if rotated is not None and store is not None:
                await store.asave(rotated)
            self._accept_access(entry, grant, candidate.source, masked=True)
            return

    def _reread_sync(self, store: TokenStateStore, tried: set[str]) -> _Candidate | None:
        for delay in REREAD_DELAYS:
            if delay:
                time.sleep(delay * (1 + random.random() / 2))
            newer = self._new_from_overlay(store.load(), tried)
            if newer is not None:
                return newer
        return None

    async def _reread_async(self, store: TokenStateStore, tried: set[str]) -> _Candidate | None:
        for delay in REREAD_DELAYS:
            if delay:
                await asyncio.sleep(delay * (1 + random.random() / 2))
            newer = self._new_from_overlay(await store.aload(), tried)
            if newer is not None:
                return newer
        return None
