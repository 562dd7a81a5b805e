"""Driver for New Era NE-1000 / NE-500 syringe pumps (RS-232 "basic" mode) over pyserial.

The flow cuvette's medium is pushed by a New Era pump; its flow rate sets how fast the
speckle decorrelates, so the rate we *think* we set must be the rate the pump runs at.
This driver therefore parses every reply strictly and turns every failure into one of the
``DeviceError`` family from :mod:`devices.base`:

* no byte at all within ``timeout_s``                  -> :class:`DeviceTimeout`
* a reply that is truncated, garbled or from another
  address, or query data that does not parse          -> :class:`DeviceProtocolError`
* the pump's own ``?``, ``?NA``, ``?OOR``, ``?COM``,
  ``?IGN`` answers                                    -> :class:`PumpRefused` (a ``DeviceRefused``)
* an alarm status ``A?R|S|T|E|O``                      -> :class:`PumpAlarm` (a ``DeviceRefused``)

Wire format (basic mode, 8N1, 19200 baud by default)::

    to pump:   [address 0-99] COMMAND [args] CR        e.g. b"0RAT7.000MH\\r"
    from pump: STX  2-digit-address  prompt  [data]  ETX  e.g. b"\\x0200S\\x03"

The pump strips spaces and upper-cases commands; we send compact upper-case commands
with the address always present, so several pumps may share one port (one lock per port).

Alarms: an alarm is reported *instead of* the reply to the next command, the command is
not executed, and sending that reply acknowledges (clears) the alarm on the pump. The
driver raises :class:`PumpAlarm` and latches the code so that :meth:`NewEraPump.status`
keeps reporting it (``PumpStatus.alarm``) until :meth:`NewEraPump.clear_alarm` is
called: a GUI polling ``status()`` cannot miss a stall that was reported to a
``set_rate()`` made from another thread. Retry the refused command after clearing.

Numbers: the pump accepts at most 4 digits plus a decimal point, at most 3 decimals
(``7.000``, ``12.50``, ``123.4``, ``1234``). The API takes ml/h; :func:`choose_rate_units`
picks among ml/h, µl/h, ml/min and µl/min the units in which the rate is represented most
exactly (ties prefer ml/h), so e.g. 0.005 ml/h is sent as ``5.000UH`` rather than ``0.005MH``.
``*RESET`` is deliberately not exposed: it wipes the pump's programs and its address.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import serial

from devices.base import (
    DeviceBase,
    DeviceError,
    DeviceProtocolError,
    DeviceRefused,
    DeviceTimeout,
    PumpStatus,
)

__all__ = [
    "ALARMS",
    "ERRORS",
    "PROMPTS",
    "RATE_UNITS_ML_PER_H",
    "NewEraPump",
    "PumpAlarm",
    "PumpRefused",
    "best_units",
    "choose_rate_units",
    "format_number",
    "parse_number",
]

log = logging.getLogger(__name__)

try:  # pyserial lets termios.error (not an OSError) escape when a tty vanishes (USB unplugged)
    import termios

    _PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # pragma: no cover - Windows
    _PORT_ERRORS = (serial.SerialException, OSError)
T = TypeVar("T")

STX = b"\x02"
ETX = b"\x03"
CR = b"\r"
MAX_REPLY_BYTES = 256  # longest real reply is ~20 bytes; a cap keeps line noise from reading forever

#: Status prompts (the char after the address). Running means the plunger moves.
PROMPTS: dict[str, str] = {
    "I": "infusing",
    "W": "withdrawing",
    "S": "stopped",
    "P": "paused",
    "T": "timed pause phase",
    "U": "waiting for user/trigger",
    "X": "purging",
}
RUNNING_PROMPTS = frozenset("IWX")

#: Alarm types in ``A?<type>``.
ALARMS: dict[str, str] = {
    "R": "pump was reset (power was interrupted)",
    "S": "pump motor stalled",
    "T": "safe-mode communications timed out",
    "E": "pumping program error",
    "O": "pumping program phase out of range",
}

#: Command errors after ``?`` (the empty code is a bare ``?``).
ERRORS: dict[str, str] = {
    "": "command not recognised",
    "NA": "command not applicable in the pump's current state "
    "(e.g. changing rate units, diameter or direction while pumping)",
    "OOR": "value out of range (e.g. a rate outside the limits the syringe diameter allows)",
    "COM": "invalid communications packet",
    "IGN": "command ignored because a new program phase started at the same time",
}

#: Factor converting a rate in the given units to ml/h.
RATE_UNITS_ML_PER_H: dict[str, float] = {"MH": 1.0, "UH": 1e-3, "MM": 60.0, "UM": 0.06}
_RATE_UNITS_PREFERENCE = ("MH", "UH", "MM", "UM")  # ties go to the unit people think in
VOLUME_UNITS_ML: dict[str, float] = {"ML": 1.0, "UL": 1e-3}

_DIRECTIONS_TO_WIRE = {"infuse": "INF", "withdraw": "WDR", "reverse": "REV"}
_DIRECTIONS_FROM_WIRE = {"INF": "infuse", "WDR": "withdraw", "STK": "sticky"}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)"
_RE_NUMBER = re.compile(_NUMBER)
_RE_REPLY = re.compile(r"\x02(\d\d)(?:A\?([A-Z])|([A-Z])([\x20-\x7e]*))\x03", re.ASCII)
_RE_RATE = re.compile(rf"({_NUMBER})(UM|MM|UH|MH)")
_RE_VOLUME = re.compile(rf"({_NUMBER})(UL|ML)")
_RE_DISPENSED = re.compile(rf"I({_NUMBER})W({_NUMBER})(UL|ML)")
_RE_VERSION = re.compile(r"NE(\d+)V(\d+)\.(\d+)")


class PumpRefused(DeviceRefused):
    """The pump answered ``?<code>``: it understood the packet but did not do it.

    ``code`` is ``""`` (unrecognised), ``"NA"``, ``"OOR"``, ``"COM"`` or ``"IGN"``; the
    message spells it out because a GUI shows it to someone holding a syringe.
    """

    def __init__(self, message: str, *, code: str, command: str) -> None:
        super().__init__(message)
        self.code = code
        self.command = command


class PumpAlarm(DeviceRefused):
    """The pump answered with an alarm (``A?<code>``) instead of executing ``command``.

    The alarm is already acknowledged on the pump by that reply; the command was not
    executed and must be sent again once the cause (stall, power cut) is dealt with.
    """

    def __init__(self, message: str, *, code: str, command: str) -> None:
        super().__init__(message)
        self.code = code
        self.meaning = ALARMS.get(code, "unknown alarm")
        self.command = command


# --------------------------------------------------------------------------- numbers


def format_number(value: float) -> str:
    """Format ``value`` for the pump: at most 4 digits and 3 decimals, as many decimals as fit.

    ``7 -> "7.000"``, ``12.5 -> "12.50"``, ``123.45 -> "123.5"`` (rounded), ``1234 -> "1234"``.
    Raises ``ValueError`` for negatives, non-finite values or values >= 9999.5 that
    cannot be written in 4 digits.
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"the pump only takes finite non-negative numbers, not {value!r}")
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if sum(ch.isdigit() for ch in text) <= 4:
            return text
    raise ValueError(f"{value!r} does not fit the pump's 4-digit number field")


def parse_number(text: str) -> float:
    """Parse a number exactly as the pump writes it (digits and one optional point)."""
    if not _RE_NUMBER.fullmatch(text):
        raise ValueError(f"not a pump number: {text!r}")
    return float(text)


def format_in_units(ml_per_h: float, units: str) -> str | None:
    """``ml_per_h`` written in ``units`` (``"MH"``...), or None when it does not fit or rounds to 0."""
    try:
        text = format_number(ml_per_h / RATE_UNITS_ML_PER_H[units])
    except ValueError:
        return None
    return text if float(text) > 0 else None


def best_units(value: float, factors: dict[str, float]) -> tuple[str, str] | None:
    """Write ``value`` (in base units) in whichever of ``factors`` represents it best in 4 digits.

    ``factors`` maps unit codes, in order of preference, to their size in base units.
    The most exact representation wins; among equally exact ones the one with more
    significant digits (``0.005`` ml/h -> ``5.000`` µl/h: the pump then shows, and a later
    small change keeps, full resolution); remaining ties follow the order of ``factors``.
    A non-zero value never rounds to ``0`` (a volume target of 0 would mean "pump forever").
    Returns ``(number_text, units)`` or None when no unit fits.
    """
    best: tuple[float, int, int, str, str] | None = None
    for rank, (units, factor) in enumerate(factors.items()):
        try:
            text = format_number(value / factor)
        except ValueError:
            continue
        if value > 0 and float(text) == 0:
            continue
        error = abs(float(text) * factor - value) / value if value else 0.0
        significant = len(text.replace(".", "").lstrip("0"))
        key = (round(error, 12), -significant, rank, text, units)
        if best is None or key < best:
            best = key
    return None if best is None else (best[3], best[4])


def choose_rate_units(ml_per_h: float) -> tuple[str, str]:
    """Pick the rate units that represent ``ml_per_h`` most exactly in 4 digits (see :func:`best_units`).

    Returns ``(number_text, units)``; ties go to ml/h, then µl/h, ml/min, µl/min, so the
    pump's display reads what the protocol file says. Raises ``ValueError`` when no unit
    can express the rate (< 0.0005 µl/h or >= 9999.5 ml/min).
    """
    if not math.isfinite(ml_per_h) or ml_per_h <= 0:
        raise ValueError(f"a pump rate must be a positive number of ml/h, not {ml_per_h!r}")
    choice = best_units(ml_per_h, {u: RATE_UNITS_ML_PER_H[u] for u in _RATE_UNITS_PREFERENCE})
    if choice is None:
        raise ValueError(f"{ml_per_h!r} ml/h cannot be expressed in any New Era rate units")
    return choice


# --------------------------------------------------------------------------- shared ports


class _SharedPort:
    """One open serial port and the lock that serialises every exchange on it.

    Several pumps (addresses 0-99) can hang on one RS-232 line; each exchange is
    command-then-reply, so all pumps on the line must share the port and its lock.
    """

    def __init__(self, url: str, baudrate: int, timeout_s: float) -> None:
        self.url = url
        self.baudrate = baudrate
        self.lock = threading.RLock()
        self.users = 0
        try:
            self.serial = serial.serial_for_url(
                url,
                baudrate=baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=timeout_s,
                write_timeout=timeout_s,
            )
        except (*_PORT_ERRORS, ValueError) as exc:
            raise DeviceError(f"New Era pump: cannot open serial port {url!r}: {exc}") from exc


_PORTS: dict[str, _SharedPort] = {}
_PORTS_LOCK = threading.Lock()


def _acquire_port(url: str, baudrate: int, timeout_s: float) -> _SharedPort:
    with _PORTS_LOCK:
        port = _PORTS.get(url)
        if port is None:
            port = _PORTS[url] = _SharedPort(url, baudrate, timeout_s)
        elif port.baudrate != baudrate:
            raise DeviceError(
                f"New Era pump: port {url!r} is already open at {port.baudrate} baud, not {baudrate}"
            )
        port.users += 1
        return port


def _release_port(port: _SharedPort) -> None:
    with _PORTS_LOCK:
        port.users -= 1
        if port.users > 0:
            return
        _PORTS.pop(port.url, None)
    with port.lock:
        try:
            port.serial.close()
        except _PORT_ERRORS as exc:  # closing a vanished USB adapter
            log.warning("closing %s failed: %s", port.url, exc)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class _Reply:
    prompt: str
    data: str
    raw: bytes


class NewEraPump(DeviceBase):
    """A New Era NE-1000/NE-500 pump implementing :class:`devices.base.Pump`.

    ``url`` is anything :func:`serial.serial_for_url` opens: ``COM3``, ``/dev/ttyUSB0``,
    a pty path from :class:`devices.pump_sim.SimulatedPumpServer`, or ``socket://host:port``.
    Opening sends a status query (acknowledging a pending power-up ``R`` alarm, which is
    latched, see :meth:`clear_alarm`) and reads the firmware version, so a wrong port,
    baud rate or address fails here rather than in the middle of a run.
    """

    def __init__(self, url: str, address: int = 0, baudrate: int = 19200, timeout_s: float = 1.0) -> None:
        if not 0 <= int(address) <= 99:
            raise ValueError(f"New Era pump address must be 0..99, not {address!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
        self.url = url
        self.address = int(address)
        self.baudrate = baudrate
        self.timeout_s = float(timeout_s)
        self._closed = True
        self._close_lock = threading.Lock()
        self._alarm: str | None = None
        self._prompt: str | None = None
        self._port = _acquire_port(url, baudrate, self.timeout_s)
        self._closed = False
        try:
            with contextlib.suppress(PumpAlarm):  # latched by _exchange, reported by status()
                self._exchange("")
            self._version = self._query_version()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- Pump protocol

    def identity(self) -> dict[str, str]:
        """Vendor, model, firmware, port and address (stored in every run file)."""
        model, firmware = self._version
        return {
            "vendor": "New Era Pump Systems",
            "model": f"NE-{model}",
            "firmware": firmware,
            "port": self.url,
            "address": str(self.address),
            "driver": "devices.pump_newera.NewEraPump",
        }

    def set_diameter(self, mm: float) -> None:
        """Set the syringe inner diameter (mm); the pump derives its rate limits from it.

        The pump refuses (``?NA``) while pumping and ``?OOR`` outside its range.
        """
        self._set("DIA", format_number(self._positive(mm, "diameter")))

    def set_rate(self, ml_per_h: float) -> None:
        """Set the pumping rate in ml/h, sent in the units that keep 4 digits of precision.

        The pump cannot change rate *units* while pumping (``?NA``); in that case the rate
        is re-sent in the units the pump is using, provided they express it to 0.5 %.
        """
        number, units = self._rate_text(ml_per_h)
        with self._port.lock:
            try:
                self._set("RAT", number + units)
            except PumpRefused as exc:
                if exc.code != "NA" or self._prompt not in RUNNING_PROMPTS:
                    raise
                _, current_units = self._query_rate()
                if current_units == units:
                    raise
                retry = format_in_units(ml_per_h, current_units)
                if (
                    retry is None
                    or abs(float(retry) * RATE_UNITS_ML_PER_H[current_units] / ml_per_h - 1) > 5e-3
                ):
                    raise PumpRefused(
                        f"{self._who()}: cannot set {ml_per_h} ml/h while pumping: the pump is using "
                        f"{current_units} units, which cannot express it; stop the pump first",
                        code="NA",
                        command=f"RAT{number}{units}",
                    ) from exc
                self._set("RAT", retry + current_units)

    def set_direction(self, direction: str) -> None:
        """``"infuse"``, ``"withdraw"`` or ``"reverse"`` (DIR INF/WDR/REV)."""
        wire = _DIRECTIONS_TO_WIRE.get(direction.lower())
        if wire is None:
            raise ValueError(f"direction must be one of {sorted(_DIRECTIONS_TO_WIRE)}, not {direction!r}")
        self._set("DIR", wire)

    def run(self) -> None:
        """Start (or resume after a pause) pumping with the current rate, direction and volume."""
        self._set("RUN")

    def stop(self) -> None:
        """Stop the flow and end the pumping program (prompt S).

        On the pump a first STP only *pauses* (prompt P: the next RUN resumes the phase and
        its remaining volume); a second STP stops it. A full stop leaves the pump in the
        state every setting is accepted in, and a later RUN starts a fresh phase.
        A pending alarm does not prevent stopping: it is latched for :meth:`status` and the
        STP is repeated, because stopping is what a failing run relies on.
        """
        with self._port.lock:
            try:
                self._set("STP")
            except PumpAlarm:  # latched (status() shows it); the STP was not executed: send it again
                self._set("STP")
            if self._prompt == "P":
                self._set("STP")

    def pause(self) -> None:
        """Pause (one STP, prompt P): the next :meth:`run` resumes the phase where it stopped."""
        self._set("STP")

    def status(self) -> PumpStatus:
        """One consistent snapshot (direction, rate, diameter, dispensed volume) under the port lock.

        An alarm met while querying is latched and returned in ``alarm``, not raised: status
        is what monitors poll. ``dispensed_ml`` is infused + withdrawn volume (medium moved
        through the cuvette either way); use :meth:`dispensed` for the two counters.
        """
        with self._port.lock:
            try:
                snapshot = self._snapshot()
            except PumpAlarm:  # latched and acknowledged: the second pass gets real answers
                snapshot = self._snapshot()
            return snapshot

    def _snapshot(self) -> PumpStatus:
        direction = self.direction()
        prompt = self._prompt
        if prompt == "I":
            direction = "infuse"
        elif prompt == "W":
            direction = "withdraw"
        rate = self.rate_ml_per_h()
        diameter = self.diameter_mm()
        infused, withdrawn = self.dispensed()
        return PumpStatus(
            running=prompt in RUNNING_PROMPTS,
            direction=direction,
            rate_ml_per_h=rate,
            diameter_mm=diameter,
            dispensed_ml=infused + withdrawn,
            alarm=self._alarm,
        )

    def close(self) -> None:
        """Release the port (closed when the last pump on it closes); safe to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _release_port(self._port)

    # ----------------------------------------------------------------- extras

    @property
    def prompt(self) -> str | None:
        """The status char of the last reply (``"I"``, ``"S"``, ...); None before any reply."""
        return self._prompt

    @property
    def firmware(self) -> str:
        """Firmware version, e.g. ``"3.928"``."""
        return self._version[1]

    def query_status(self) -> str:
        """Send a bare status query and return the prompt char (see :data:`PROMPTS`)."""
        return self._exchange("").prompt

    def clear_alarm(self) -> str | None:
        """Acknowledge alarms: returns the latched or just-acknowledged code, or None.

        Sends a bare status query, which on the pump acknowledges any pending alarm, and
        clears the driver's latch so ``status().alarm`` is None again.
        """
        with self._port.lock:
            with contextlib.suppress(PumpAlarm):
                self._exchange("")
            code, self._alarm = self._alarm, None
            return code

    def rate_ml_per_h(self) -> float:
        """Query the pump's rate and convert it to ml/h."""
        number, units = self._query_rate()
        return number * RATE_UNITS_ML_PER_H[units]

    def rate_setting(self) -> tuple[float, str]:
        """The rate exactly as the pump holds it: (number, units), e.g. ``(7.0, "MH")``."""
        return self._query_rate()

    def diameter_mm(self) -> float:
        """Query the syringe diameter in mm."""
        reply = self._exchange("DIA")
        return self._parse(reply, "DIA", _RE_NUMBER, lambda m: parse_number(m.group(0)))

    def direction(self) -> str:
        """Query the programmed direction: ``"infuse"``, ``"withdraw"`` (or ``"sticky"``)."""
        reply = self._exchange("DIR")
        direction = _DIRECTIONS_FROM_WIRE.get(reply.data)
        if direction is None:
            raise self._garbled("DIR", reply.raw, f"unknown direction {reply.data!r}")
        return direction

    def set_volume_target(self, ml: float) -> None:
        """Volume to dispense before the pump stops by itself; 0 pumps continuously.

        The volume units (µl or ml) are chosen for precision and set first (``VOL UL|ML``).
        """
        if not math.isfinite(ml) or ml < 0:
            raise ValueError(f"volume target must be >= 0 ml, not {ml!r}")
        choice = best_units(ml, VOLUME_UNITS_ML)
        if choice is None:
            raise PumpRefused(
                f"{self._who()}: volume {ml} ml is out of range of the pump's 4-digit field",
                code="OOR",
                command="VOL",
            )
        text, units = choice
        with self._port.lock:
            self._set("VOL", units)
            self._set("VOL", text)

    def volume_target_ml(self) -> float:
        """Query the volume to be dispensed (0 = continuous) in ml."""
        reply = self._exchange("VOL")
        return self._parse(
            reply, "VOL", _RE_VOLUME, lambda m: parse_number(m.group(1)) * VOLUME_UNITS_ML[m.group(2)]
        )

    def dispensed(self) -> tuple[float, float]:
        """(infused_ml, withdrawn_ml) since the counters were last cleared (DIS)."""
        reply = self._exchange("DIS")

        def convert(m: re.Match[str]) -> tuple[float, float]:
            factor = VOLUME_UNITS_ML[m.group(3)]
            return parse_number(m.group(1)) * factor, parse_number(m.group(2)) * factor

        return self._parse(reply, "DIS", _RE_DISPENSED, convert)

    def clear_dispensed(self) -> None:
        """Zero both dispensed-volume counters (CLD INF, CLD WDR)."""
        with self._port.lock:
            self._set("CLD", "INF")
            self._set("CLD", "WDR")

    # ----------------------------------------------------------------- internals

    def _who(self) -> str:
        return f"New Era pump {self.address:02d} on {self.url}"

    @staticmethod
    def _positive(value: float, what: str) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{what} must be a positive finite number, not {value!r}")
        return float(value)

    def _rate_text(self, ml_per_h: float) -> tuple[str, str]:
        try:
            return choose_rate_units(ml_per_h)
        except ValueError as exc:
            if math.isfinite(ml_per_h) and ml_per_h > 0:
                raise PumpRefused(
                    f"{self._who()}: rate {ml_per_h} ml/h is out of range of the pump's units",
                    code="OOR",
                    command="RAT",
                ) from exc
            raise

    def _query_version(self) -> tuple[str, str]:
        reply = self._exchange("VER")
        return self._parse(
            reply, "VER", _RE_VERSION, lambda m: (m.group(1), f"{int(m.group(2))}.{m.group(3)}")
        )

    def _query_rate(self) -> tuple[float, str]:
        reply = self._exchange("RAT")
        return self._parse(reply, "RAT", _RE_RATE, lambda m: (parse_number(m.group(1)), m.group(2)))

    def _parse(
        self, reply: _Reply, command: str, pattern: re.Pattern[str], convert: Callable[[re.Match[str]], T]
    ) -> T:
        """Full-match the query data against ``pattern`` and convert it; anything else is garbled."""
        match = pattern.fullmatch(reply.data)
        if match is None:
            raise self._garbled(command, reply.raw, f"unexpected data {reply.data!r}")
        try:
            return convert(match)
        except ValueError as exc:
            raise self._garbled(command, reply.raw, str(exc)) from exc

    def _set(self, command: str, args: str = "") -> None:
        reply = self._exchange(command, args)
        if reply.data:
            raise self._garbled(command + args, reply.raw, f"a set command answered with data {reply.data!r}")

    def _garbled(self, command: str, raw: bytes, why: str) -> DeviceProtocolError:
        return DeviceProtocolError(f"{self._who()}: garbled reply to {command!r}: {raw!r} ({why})")

    def _exchange(self, command: str, args: str = "") -> _Reply:
        """Send one command and return its parsed reply; raise the matching DeviceError."""
        if self._closed:
            raise DeviceError(f"{self._who()}: used after close()")
        text = f"{command}{args}"
        packet = f"{self.address}{text}".encode("ascii") + CR
        label = text or "<status query>"
        port = self._port
        with port.lock:
            ser = port.serial
            try:
                if ser.timeout != self.timeout_s:  # setting it reconfigures the port: only when needed
                    ser.timeout = self.timeout_s
                    ser.write_timeout = self.timeout_s
                ser.reset_input_buffer()  # drop a late reply to an earlier timed-out command
                ser.write(packet)
                ser.flush()
                raw = ser.read_until(ETX, MAX_REPLY_BYTES)
            except serial.SerialTimeoutException as exc:
                raise DeviceTimeout(
                    f"{self._who()}: could not send {label!r} within {self.timeout_s} s"
                ) from exc
            except _PORT_ERRORS as exc:
                raise DeviceError(f"{self._who()}: serial port failed during {label!r}: {exc}") from exc
        log.debug("%s tx %r rx %r", self._who(), packet, raw)
        if not raw:
            raise DeviceTimeout(
                f"{self._who()}: no reply to {label!r} within {self.timeout_s} s "
                f"(check cable, {self.baudrate} baud 8N1 and address {self.address})"
            )
        if not raw.endswith(ETX):
            why = "too long" if len(raw) >= MAX_REPLY_BYTES else "truncated, no ETX before the timeout"
            raise self._garbled(label, raw, why)
        match = _RE_REPLY.fullmatch(raw.decode("latin-1"))
        if match is None:
            raise self._garbled(label, raw, "not STX <address> <status> [data] ETX")
        address = int(match.group(1))
        if address != self.address:
            raise self._garbled(label, raw, f"reply from address {address}, expected {self.address}")
        alarm = match.group(2)
        if alarm is not None:
            if alarm not in ALARMS:
                raise self._garbled(label, raw, f"unknown alarm type {alarm!r}")
            self._alarm = alarm
            self._prompt = "S"
            raise PumpAlarm(
                f"{self._who()}: alarm {alarm} ({ALARMS[alarm]}) reported instead of executing {label!r}; "
                "the pump has acknowledged it, fix the cause and send the command again",
                code=alarm,
                command=text,
            )
        prompt = match.group(3)
        if prompt not in PROMPTS:
            raise self._garbled(label, raw, f"unknown status {prompt!r}")
        self._prompt = prompt
        data = match.group(4)
        if data.startswith("?"):
            code = data[1:]
            if code not in ERRORS:
                raise self._garbled(label, raw, f"unknown error code {data!r}")
            raise PumpRefused(
                f"{self._who()} refused {label!r}: {ERRORS[code]} ({data})", code=code, command=text
            )
        return _Reply(prompt=prompt, data=data, raw=raw)
