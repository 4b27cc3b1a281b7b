"""What the CLI prints: durations, times, the device code, a QR code and the approval countdown."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.device import DeviceAuthorization


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return span(seconds) + " ago" if seconds >= 1 else "just now"


def span(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def when(epoch: float | None) -> str:
    if epoch is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def print_qr(text: str, out: TextIO) -> None:
    try:
        import qrcode
    except ImportError:
        print(
            "(install the `qrcode` package for a QR code: pip install 'airflow-provider-iceprod[cli]')",
            file=out,
        )
        return
    qr = qrcode.QRCode(border=1)
    qr.add_data(text)
    qr.make(fit=True)
    qr.print_ascii(out=out, invert=True)


class Countdown:
    """Shows the time left to approve: one updating line on a terminal, a line every 30 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_line = -1.0

    def __call__(self, remaining: float) -> None:
        text = f"Waiting for approval... {int(remaining) // 60}:{int(remaining) % 60:02d} left"
        if self.tty:
            print(f"\r{text} ", end="", file=self.out, flush=True)
        elif self._last_line < 0 or self._last_line - remaining >= 30:
            print(text, file=self.out, flush=True)
            self._last_line = remaining

    def done(self) -> None:
        if self.tty:
            print(file=self.out)


def show_device_code(auth: DeviceAuthorization, *, qr: bool, out: TextIO) -> None:
    print(f"To log in to IceProd, open {auth.verification_uri}", file=out)
    print(f"and enter the code: {auth.user_code}", file=out)
    if auth.verification_uri_complete:
        print(f"(or open {auth.verification_uri_complete} directly)", file=out)
    if qr:
        print_qr(auth.verification_uri_complete or auth.verification_uri, out)
    print(f"The code expires in {span(auth.expires_in)}.", file=out, flush=True)
