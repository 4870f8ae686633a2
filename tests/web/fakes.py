"""A fake MediaEndpoint for signalling tests: records what signalling hands it."""

from __future__ import annotations

from collections.abc import Callable

from gateway.webrtc.api import IceCandidate, MediaMode, SessionState, SessionStats

ANSWER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=answer\r\nt=0 0\r\n"


class FakeMediaSession:
    """Answers any offer starting with ``v=0``; ValueError otherwise (like a real parser)."""

    def __init__(self, call_id: str, mode: MediaMode) -> None:
        self.call_id = call_id
        self.mode = mode
        self.on_local_candidate: Callable[[IceCandidate | None], None] | None = None
        self.on_state: Callable[[SessionState], None] | None = None
        self.offers: list[str] = []
        self.remote: list[IceCandidate | None] = []
        self.closed = False
        self.fail_with: BaseException | None = None  # raised by accept_offer when set

    async def accept_offer(self, sdp: str) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        if not sdp.startswith("v=0"):
            raise ValueError("not an SDP offer: it must start with v=0")
        self.offers.append(sdp)
        return ANSWER

    async def add_remote_candidate(self, candidate: IceCandidate | None) -> None:
        if candidate is not None and "bogus" in candidate.candidate:
            raise ValueError("unparseable candidate")
        self.remote.append(candidate)

    def stats(self) -> SessionStats:
        return SessionStats(packets_received={"audio": len(self.offers)})

    async def close(self) -> None:
        self.closed = True

    # -- what the real endpoint would do on its own

    def emit_candidate(self, candidate: IceCandidate | None) -> None:
        assert self.on_local_candidate is not None
        self.on_local_candidate(candidate)

    def set_state(self, state: SessionState) -> None:
        assert self.on_state is not None
        self.on_state(state)


class FakeMediaEndpoint:
    def __init__(self) -> None:
        self.sessions: list[FakeMediaSession] = []
        self.session_factory: Callable[[str, MediaMode], FakeMediaSession] = FakeMediaSession

    def create_session(self, call_id: str, mode: MediaMode) -> FakeMediaSession:
        session = self.session_factory(call_id, mode)
        self.sessions.append(session)
        return session
