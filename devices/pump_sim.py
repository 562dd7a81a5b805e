"""Simulated New Era NE-1000 pump serving the RS-232 basic protocol on a real pty or TCP socket.

Why a byte-level twin instead of a fake ``Pump`` object: the simulated bench drives the
*real* driver (:mod:`devices.pump_newera`) through pyserial, so every path the lab uses
(number formatting, reply parsing, timeouts, alarms) is exercised without a pump.

* :class:`PumpModel` holds the pump's state (rate and units, diameter, direction, volume
  target, dispensed counters, alarm) and integrates dispensed volume over a
  :class:`~devices.bench.clock.SimClock` - the same clock the other simulated devices
  read, so on a virtual clock the dispensed volume is exact and deterministic. Rate
  limits follow from the diameter as on the real pump (a plunger speed range), and the
  model answers ``?OOR``/``?NA`` where the pump would. :meth:`PumpModel.flow_ml_per_h`
  (0 when not pumping) is what the virtual bench reads to set the medium's decorrelation.
* :class:`SimulatedPumpServer` serves the protocol in a background thread on a
  pseudo-terminal (``os.openpty`` in raw mode; ``start()`` returns the slave path) or a
  loopback socket (``socket://127.0.0.1:PORT``). ``stop()`` always ends the thread: the
  loop polls with a 50 ms ``select`` timeout and never blocks on a write.

Accepted input is what the pump accepts: ``[address]COMMAND[args]CR`` with spaces and
control characters stripped and lower case folded to upper case; a command for another
address gets no reply. Test hooks: :meth:`PumpModel.raise_alarm`,
:meth:`SimulatedPumpServer.garble_next_reply`, :attr:`SimulatedPumpServer.silent`, and
:attr:`SimulatedPumpServer.received` (raw command lines as they arrived).

The number formatter here is deliberately separate from the driver's, so a formatting
bug in the driver cannot be mirrored (and hidden) by the twin.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import re
import select
import socket
import threading
import tty
from typing import Literal

from devices.bench.clock import SimClock

__all__ = ["PumpModel", "SimulatedPumpServer"]

log = logging.getLogger(__name__)

STX, ETX, CR = b"\x02", b"\x03", b"\r"

#: Plunger speed range of an NE-1000 (mm/h), from its specification: 0.73 µl/h minimum
#: with a 1 ml syringe (4.699 mm), 2120 ml/h maximum with a 60 ml syringe (26.59 mm).
MIN_PLUNGER_MM_PER_H = 0.73 / (math.pi / 4 * 4.699**2)
MAX_PLUNGER_MM_PER_H = 2120e3 / (math.pi / 4 * 26.59**2)
DIAMETER_RANGE_MM = (0.1, 50.0)
#: At or below this diameter the pump's volume units default to µl, above it to ml.
MICROLITRE_DIAMETER_MM = 14.0

RATE_UNITS_ML_PER_H = {"MH": 1.0, "UH": 1e-3, "MM": 60.0, "UM": 0.06}
VOLUME_UNITS_ML = {"ML": 1.0, "UL": 1e-3}

_RE_LINE = re.compile(r"(\d{1,2})?(.*)")
_RE_NUMBER = re.compile(r"\d+\.?\d*|\.\d+")
_RE_RAT = re.compile(r"([\d.]+)(UM|MM|UH|MH)?")


class _Refusal(Exception):
    """The pump's ``?<code>`` answer; ``code`` is "", "NA", "OOR", "COM" or "IGN"."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _fmt(value: float) -> str:
    """The pump's own number style: <= 4 digits, <= 3 decimals, as many decimals as fit."""
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if sum(c.isdigit() for c in text) <= 4:
            return text
    return "9999"


def _number(text: str) -> float:
    """Parse a numeric argument; syntax errors are ``?``, more than 4 digits/3 decimals ``?OOR``."""
    if not _RE_NUMBER.fullmatch(text):
        raise _Refusal("")
    digits = sum(c.isdigit() for c in text)
    decimals = len(text.partition(".")[2])
    if digits > 4 or decimals > 3:
        raise _Refusal("OOR")
    return float(text)


class PumpModel:
    """State and physics of one NE-1000, thread-safe (the server thread and the bench share it).

    ``clock`` defaults to a wall-clock :class:`SimClock`; pass the bench's clock so the
    dispensed volume follows bench time.
    """

    ALARM_CODES = frozenset("RSTEO")

    def __init__(
        self,
        clock: SimClock | None = None,
        *,
        address: int = 0,
        diameter_mm: float = 14.43,
        firmware: str = "NE1000V3.928",
    ) -> None:
        self.clock = clock if clock is not None else SimClock(realtime=True)
        self.address = address
        self.firmware = firmware
        self._lock = threading.RLock()
        self._set_defaults(diameter_mm)

    def _set_defaults(self, diameter_mm: float) -> None:
        """Factory settings (also what ``*RESET`` restores)."""
        self._diameter_mm = diameter_mm
        self._volume_units = self._default_volume_units(diameter_mm)
        self._rate_value, self._rate_units = 1.0, "MH"
        self._direction = "INF"
        self._volume_target_ml = 0.0
        self._running = False
        self._paused = False
        self._run_dispensed_ml = 0.0
        self._infused_ml = 0.0
        self._withdrawn_ml = 0.0
        self._alarm: str | None = None
        self._t_last = self.clock.now()

    # ----------------------------------------------------------------- observation

    @property
    def running(self) -> bool:
        """True while the plunger moves (prompt I or W)."""
        with self._lock:
            self._update()
            return self._running

    @property
    def rate_ml_per_h(self) -> float:
        """The programmed rate in ml/h (whether or not pumping)."""
        with self._lock:
            return self._rate_value * RATE_UNITS_ML_PER_H[self._rate_units]

    @property
    def rate_setting(self) -> tuple[float, str]:
        """The rate as the pump holds it: (number, units)."""
        with self._lock:
            return self._rate_value, self._rate_units

    @property
    def diameter_mm(self) -> float:
        with self._lock:
            return self._diameter_mm

    @property
    def direction(self) -> str:
        """``"infuse"`` or ``"withdraw"``."""
        with self._lock:
            return "infuse" if self._direction == "INF" else "withdraw"

    @property
    def volume_target_ml(self) -> float:
        with self._lock:
            return self._volume_target_ml

    @property
    def dispensed_ml(self) -> tuple[float, float]:
        """(infused, withdrawn) in ml, integrated up to the clock's current time."""
        with self._lock:
            self._update()
            return self._infused_ml, self._withdrawn_ml

    @property
    def alarm(self) -> str | None:
        with self._lock:
            return self._alarm

    @property
    def prompt(self) -> str:
        """The status char the pump would send now (I, W, S or P)."""
        with self._lock:
            self._update()
            if self._running:
                return "I" if self._direction == "INF" else "W"
            return "P" if self._paused else "S"

    def flow_ml_per_h(self) -> float:
        """Flow through the cuvette now, ml/h (0 when stopped, paused or alarmed)."""
        with self._lock:
            self._update()
            return self.rate_ml_per_h if self._running else 0.0

    def rate_limits_ml_per_h(self, diameter_mm: float | None = None) -> tuple[float, float]:
        """(min, max) rate the pump accepts for ``diameter_mm`` (default: the current syringe)."""
        d = self._diameter_mm if diameter_mm is None else diameter_mm
        area_mm2 = math.pi / 4 * d * d
        return area_mm2 * MIN_PLUNGER_MM_PER_H / 1000.0, area_mm2 * MAX_PLUNGER_MM_PER_H / 1000.0

    # ----------------------------------------------------------------- test hooks

    def raise_alarm(self, code: str) -> None:
        """Make the pump alarm (``"S"`` stall, ``"R"`` power reset, ...): it stops at once and the
        next command is answered ``A?<code>`` instead of being executed."""
        if code not in self.ALARM_CODES:
            raise ValueError(f"alarm code must be one of {sorted(self.ALARM_CODES)}, not {code!r}")
        with self._lock:
            self._update()
            self._running = False
            self._paused = False
            self._alarm = code

    # ----------------------------------------------------------------- protocol

    def handle(self, line: bytes) -> bytes | None:
        """Answer one command line (without CR) with a full reply packet, or None for silence."""
        text = "".join(chr(b) for b in line if 0x20 < b < 0x7F).upper()  # strip spaces/control chars
        with self._lock:
            if text.startswith("*"):
                return self._system(text[1:])
            match = _RE_LINE.fullmatch(text)
            assert match is not None  # the pattern matches every string
            if match.group(1) is not None and int(match.group(1)) != self.address:
                return None  # addressed to another pump on the line
            body = match.group(2)
            if self._alarm is not None:
                code, self._alarm = self._alarm, None  # the reply acknowledges the alarm
                return self._packet(f"A?{code}", prompt="")
            try:
                data = self._execute(body[:3], body[3:])
            except _Refusal as refusal:
                data = "?" + refusal.code
            return self._packet(data)

    def _packet(self, data: str, prompt: str | None = None) -> bytes:
        prompt = self.prompt if prompt is None else prompt
        return STX + f"{self.address:02d}{prompt}{data}".encode("ascii") + ETX

    def _system(self, body: str) -> bytes:
        if body == "RESET":  # master reset: defaults, program cleared, address 0
            self.address = 0
            self._set_defaults(self._diameter_mm)
            return self._packet("")
        return self._packet("?")

    def _execute(self, command: str, args: str) -> str:
        handler = {
            "": self._cmd_status,
            "DIA": self._cmd_dia,
            "RAT": self._cmd_rat,
            "VOL": self._cmd_vol,
            "DIR": self._cmd_dir,
            "RUN": self._cmd_run,
            "STP": self._cmd_stp,
            "DIS": self._cmd_dis,
            "CLD": self._cmd_cld,
            "VER": self._cmd_ver,
        }.get(command)
        if handler is None:
            raise _Refusal("")
        self._update()
        return handler(args)

    def _cmd_status(self, args: str) -> str:
        return ""

    def _cmd_dia(self, args: str) -> str:
        if not args:
            return _fmt(self._diameter_mm)
        value = _number(args)
        if self._running:
            raise _Refusal("NA")
        if not DIAMETER_RANGE_MM[0] <= value <= DIAMETER_RANGE_MM[1]:
            raise _Refusal("OOR")
        self._diameter_mm = value
        self._volume_units = self._default_volume_units(value)
        return ""

    def _cmd_rat(self, args: str) -> str:
        if not args:
            return _fmt(self._rate_value) + self._rate_units
        match = _RE_RAT.fullmatch(args)
        if match is None:
            raise _Refusal("")
        value = _number(match.group(1))
        units = match.group(2) or self._rate_units
        if self._running and units != self._rate_units:
            raise _Refusal("NA")  # "rate units cannot be changed while pumping"
        lo, hi = self.rate_limits_ml_per_h()
        if not lo <= value * RATE_UNITS_ML_PER_H[units] <= hi:
            raise _Refusal("OOR")
        self._rate_value, self._rate_units = value, units
        return ""

    def _cmd_vol(self, args: str) -> str:
        factor = VOLUME_UNITS_ML[self._volume_units]
        if not args:
            return _fmt(self._volume_target_ml / factor) + self._volume_units
        if args in VOLUME_UNITS_ML:
            self._volume_units = args
            return ""
        self._volume_target_ml = _number(args) * factor
        return ""

    def _cmd_dir(self, args: str) -> str:
        if not args:
            return self._direction
        if args not in ("INF", "WDR", "REV"):
            raise _Refusal("")
        if self._running and self._volume_target_ml > 0:
            raise _Refusal("NA")  # direction can change while pumping only with no volume target
        if args == "REV":
            args = "WDR" if self._direction == "INF" else "INF"
        self._direction = args
        return ""

    def _cmd_run(self, args: str) -> str:
        if args:
            raise _Refusal("")  # program phases are not simulated
        if not self._running:
            if not self._paused:
                self._run_dispensed_ml = 0.0
            self._running, self._paused = True, False
        return ""

    def _cmd_stp(self, args: str) -> str:
        if args:
            raise _Refusal("")
        if self._running:  # first STP pauses the program, a second one stops (resets) it
            self._running, self._paused = False, True
        else:
            self._paused = False
        return ""

    def _cmd_dis(self, args: str) -> str:
        if args:
            raise _Refusal("")
        units = self._volume_units
        if max(self._infused_ml, self._withdrawn_ml) / VOLUME_UNITS_ML[units] >= 9999.5:
            units = "ML"  # keep the 4-digit field honest; the driver reads the units anyway
        factor = VOLUME_UNITS_ML[units]
        return f"I{_fmt(self._infused_ml / factor)}W{_fmt(self._withdrawn_ml / factor)}{units}"

    def _cmd_cld(self, args: str) -> str:
        if args == "INF":
            self._infused_ml = 0.0
        elif args == "WDR":
            self._withdrawn_ml = 0.0
        else:
            raise _Refusal("")
        return ""

    def _cmd_ver(self, args: str) -> str:
        if args:
            raise _Refusal("NA")
        return self.firmware

    # ----------------------------------------------------------------- physics

    @staticmethod
    def _default_volume_units(diameter_mm: float) -> str:
        return "UL" if diameter_mm <= MICROLITRE_DIAMETER_MM else "ML"

    def _update(self) -> None:
        """Integrate dispensed volume up to now; stop when the volume target is reached."""
        now = self.clock.now()
        dt_h = max(0.0, now - self._t_last) / 3600.0
        self._t_last = now
        if not self._running or dt_h == 0.0:
            return
        volume = self.rate_ml_per_h * dt_h
        if self._volume_target_ml > 0:
            remaining = self._volume_target_ml - self._run_dispensed_ml
            if volume >= remaining:
                volume = max(0.0, remaining)
                self._running, self._paused = False, False  # program finished: prompt S
        self._run_dispensed_ml += volume
        if self._direction == "INF":
            self._infused_ml += volume
        else:
            self._withdrawn_ml += volume


class SimulatedPumpServer:
    """Serve a :class:`PumpModel` over a pty (default) or a loopback TCP socket.

    ``with SimulatedPumpServer() as server: NewEraPump(server.url)`` - ``start()`` returns
    the pyserial URL; ``stop()`` ends and joins the thread and closes every descriptor.
    """

    def __init__(self, model: PumpModel | None = None, transport: Literal["pty", "socket"] = "pty") -> None:
        if transport not in ("pty", "socket"):
            raise ValueError(f"transport must be 'pty' or 'socket', not {transport!r}")
        self.model = model if model is not None else PumpModel()
        self.transport = transport
        #: When True the pump neither executes nor answers anything (a pulled cable).
        self.silent = False
        #: Raw command lines as received (before stripping), newest last.
        self.received: collections.deque[bytes] = collections.deque(maxlen=1000)
        self.url: str | None = None
        self._garble: str | None = None
        self._hook_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._clients: dict[socket.socket, bytearray] = {}

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Open the transport, start the serving thread and return the pyserial URL."""
        if self._thread is not None:
            raise RuntimeError("SimulatedPumpServer already started")
        try:
            if self.transport == "pty":
                self._master, self._slave = os.openpty()
                tty.setraw(self._slave)  # no echo, no CR->NL translation: bytes as on a real cable
                os.set_blocking(self._master, False)
                self.url = os.ttyname(self._slave)
            else:
                self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._listener.bind(("127.0.0.1", 0))
                self._listener.listen(4)
                self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._serve, name=f"pump-sim-{self.transport}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._close_fds()
            raise
        return self.url

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving; always joins the thread (it polls every 50 ms) and closes descriptors."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():  # pragma: no cover - would be a bug in _serve
                raise RuntimeError("simulated pump thread did not stop")
        self._close_fds()

    @property
    def alive(self) -> bool:
        """True while the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SimulatedPumpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flow_ml_per_h(self) -> float:
        """The model's flow (ml/h, 0 when stopped) - what the virtual bench reads."""
        return self.model.flow_ml_per_h()

    # ----------------------------------------------------------------- test hooks

    def garble_next_reply(self, mode: Literal["noise", "truncate", "address"] = "noise") -> None:
        """Corrupt the next reply (the command itself is executed, as if the line were noisy).

        ``noise``: STX, junk, ETX; ``truncate``: the reply without its last byte and ETX;
        ``address``: a well-formed reply from another pump address.
        """
        if mode not in ("noise", "truncate", "address"):
            raise ValueError(f"unknown garble mode {mode!r}")
        with self._hook_lock:
            self._garble = mode

    # ----------------------------------------------------------------- serving

    def _reply_for(self, line: bytes) -> bytes | None:
        self.received.append(bytes(line))
        if self.silent:
            return None
        reply = self.model.handle(line)
        if reply is None:
            return None
        with self._hook_lock:
            mode, self._garble = self._garble, None
        if mode == "noise":
            return STX + b"0\xfe#~" + ETX
        if mode == "truncate":
            return reply[:-2]
        if mode == "address":
            return STX + b"%02d" % ((self.model.address + 1) % 100) + reply[3:]
        return reply

    def _lines(self, buffer: bytearray, data: bytes) -> list[bytes]:
        buffer += data
        lines = []
        while CR in buffer:
            line, _, rest = bytes(buffer).partition(CR)
            buffer[:] = rest
            lines.append(line)
        if len(buffer) > 512:  # a real pump would overflow its buffer; drop the junk
            buffer.clear()
        return lines

    def _serve(self) -> None:
        try:
            if self.transport == "pty":
                self._serve_pty()
            else:
                self._serve_socket()
        except Exception:  # pragma: no cover - logged so a failing twin is visible, thread still ends
            log.exception("simulated pump server crashed")

    def _serve_pty(self) -> None:
        master = self._master
        assert master is not None
        buffer = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO while no process holds the slave open: wait for one
                self._stop.wait(0.05)
                continue
            for line in self._lines(buffer, data):
                reply = self._reply_for(line)
                if reply is not None:
                    self._write_pty(master, reply)

    def _write_pty(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(master, view) :]
            except BlockingIOError:  # nobody reads the slave: drop rather than block stop()
                log.warning("simulated pump: reply dropped, pty buffer full")
                return

    def _serve_socket(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([listener, *self._clients], [], [], 0.05)
            for sock in ready:
                if sock is listener:
                    client, _ = listener.accept()
                    client.settimeout(0.5)  # sendall to a client that never reads must not hang
                    self._clients[client] = bytearray()
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._drop_client(sock)
                    continue
                for line in self._lines(self._clients[sock], data):
                    reply = self._reply_for(line)
                    if reply is None:
                        continue
                    try:
                        sock.sendall(reply)
                    except OSError:
                        self._drop_client(sock)
                        break

    def _drop_client(self, sock: socket.socket) -> None:
        self._clients.pop(sock, None)
        sock.close()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        for sock in list(self._clients):
            self._drop_client(sock)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
