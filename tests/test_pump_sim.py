"""The simulated NE-1000: protocol answers at byte level, physics on a virtual clock, server lifecycle.

These tests talk to :class:`PumpModel` with raw command bytes (what a terminal or the
real driver sends) so the twin is checked against the protocol itself, not against the
driver that shares its assumptions.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest
import serial

from devices.bench.clock import SimClock
from devices.pump_sim import PumpModel, SimulatedPumpServer

pytestmark = pytest.mark.timeout(20)


def reply(body: str) -> bytes:
    """A pump reply packet for address 00."""
    return b"\x02" + body.encode() + b"\x03"


@pytest.fixture
def clock() -> SimClock:
    return SimClock()  # virtual: time moves only when the test advances it


@pytest.fixture
def model(clock: SimClock) -> PumpModel:
    return PumpModel(clock, diameter_mm=4.699)


def test_accepts_what_the_real_pump_accepts(model: PumpModel) -> None:
    # spaces and control characters stripped, lower case folded, address optional
    assert model.handle(b"dia 14.43") == reply("00S")
    assert model.handle(b"0DIA") == reply("00S14.43")
    assert model.handle(b" 0 r a t 7.000 mh") == reply("00S")
    assert model.handle(b"\n0RAT") == reply("00S7.000MH")
    assert model.rate_ml_per_h == pytest.approx(7.0)


def test_other_address_gets_no_reply_and_system_reset_answers(model: PumpModel) -> None:
    assert model.handle(b"5DIA20") is None
    assert model.diameter_mm == pytest.approx(4.699)
    model.address = 7
    assert model.handle(b"7DIA") == b"\x0207S4.699\x03"
    assert model.handle(b"*RESET") == reply("00S")  # accepted whatever the address
    assert model.address == 0
    assert model.rate_setting == (1.0, "MH")


def test_errors_use_the_pump_codes(model: PumpModel) -> None:
    assert model.handle(b"FOO") == reply("00S?")
    assert model.handle(b"DIA 12345") == reply("00S?OOR")  # 5 digits do not fit
    assert model.handle(b"DIA 0.0001") == reply("00S?OOR")  # 4 decimals do not fit
    assert model.handle(b"DIA 99") == reply("00S?OOR")  # above 50 mm
    assert model.handle(b"DIA 1x") == reply("00S?")
    assert model.handle(b"DIR SIDEWAYS") == reply("00S?")


def test_rate_limits_follow_the_diameter(model: PumpModel) -> None:
    lo, hi = model.rate_limits_ml_per_h()
    assert lo == pytest.approx(0.73e-3, rel=1e-3)  # NE-1000 spec: 0.73 ul/h with a 1 ml syringe
    assert model.rate_limits_ml_per_h(26.59)[1] == pytest.approx(2120, rel=1e-3)
    assert model.handle(b"RAT 0.500UH") == reply("00S?OOR")
    assert model.handle(b"RAT 100.0MH") == reply("00S?OOR")
    assert model.handle(b"RAT 60.00MH") == reply("00S")


def test_run_pause_stop_and_units_locked_while_pumping(model: PumpModel, clock: SimClock) -> None:
    model.handle(b"RAT 6.000MH")
    assert model.handle(b"RUN") == reply("00I")
    assert model.flow_ml_per_h() == pytest.approx(6.0)
    assert model.handle(b"RAT 500.0UH") == reply("00I?NA")  # "rate units cannot be changed while pumping"
    assert model.handle(b"RAT 5.000") == reply("00I")  # same units: fine
    assert model.handle(b"DIA 10") == reply("00I?NA")
    assert model.handle(b"STP") == reply("00P")  # first STP pauses
    assert model.flow_ml_per_h() == 0.0
    assert model.handle(b"STP") == reply("00S")  # second STP stops
    assert model.handle(b"DIR WDR") == reply("00S")
    assert model.handle(b"RUN") == reply("00W")


def test_dispensed_volume_integrates_on_the_clock(model: PumpModel, clock: SimClock) -> None:
    model.handle(b"DIA 26.59")  # ml volume units above 14 mm
    model.handle(b"RAT 120.0MH")
    model.handle(b"RUN")
    clock.advance(90.0)  # 3 ml at 120 ml/h
    assert model.handle(b"DIS") == reply("00II3.000W0.000ML")
    model.handle(b"DIR REV")
    clock.advance(30.0)
    assert model.dispensed_ml == pytest.approx((3.0, 1.0))
    model.handle(b"CLD INF")
    assert model.handle(b"DIS") == reply("00WI0.000W1.000ML")


def test_dispensed_uses_microlitres_for_small_syringes(model: PumpModel, clock: SimClock) -> None:
    model.handle(b"RAT 6.000MH")
    model.handle(b"RUN")
    clock.advance(1.5)
    assert model.handle(b"DIS") == reply("00II2.500W0.000UL")


def test_volume_target_stops_the_pump_exactly(model: PumpModel, clock: SimClock) -> None:
    model.handle(b"RAT 6.000MH")
    model.handle(b"VOL 50.00")  # ul for a 4.699 mm syringe
    assert model.handle(b"VOL") == reply("00S50.00UL")
    model.handle(b"RUN")
    clock.advance(60.0)  # would be 100 ul
    assert not model.running
    assert model.prompt == "S"
    assert model.dispensed_ml[0] == pytest.approx(0.050)
    assert model.handle(b"DIR WDR") == reply("00S")


def test_pause_resumes_the_phase_but_stop_restarts_it(model: PumpModel, clock: SimClock) -> None:
    model.handle(b"RAT 6.000MH")
    model.handle(b"VOL 50.00")
    model.handle(b"RUN")
    clock.advance(20.0)  # 33.3 ul
    model.handle(b"STP")
    model.handle(b"RUN")  # resume: 16.7 ul left
    clock.advance(20.0)
    assert model.dispensed_ml[0] == pytest.approx(0.050)
    model.handle(b"RUN")  # from stopped: a fresh 50 ul
    clock.advance(60.0)
    assert model.dispensed_ml[0] == pytest.approx(0.100)


def test_alarm_replaces_one_reply_and_blocks_that_command(model: PumpModel) -> None:
    model.handle(b"RAT 6.000MH")
    model.handle(b"RUN")
    model.raise_alarm("S")
    assert model.flow_ml_per_h() == 0.0
    assert model.handle(b"RAT 7.000MH") == reply("00A?S")
    assert model.rate_setting == (6.0, "MH")  # not executed
    assert model.alarm is None  # acknowledged by that reply
    assert model.handle(b"") == reply("00S")
    with pytest.raises(ValueError):
        model.raise_alarm("Z")


@pytest.mark.parametrize("transport", ["pty", "socket"])
def test_server_serves_raw_bytes_and_always_joins(transport: str, clock: SimClock) -> None:
    server = SimulatedPumpServer(PumpModel(clock), transport=transport)
    url = server.start()
    try:
        with serial.serial_for_url(url, baudrate=19200, timeout=1.0) as port:
            port.write(b"0ver\r")
            assert port.read_until(b"\x03") == reply("00SNE1000V3.928")
            server.silent = True  # a client still connected and waiting must not keep the thread alive
            port.timeout = 0.2
            port.write(b"0VER\r")
            assert port.read_until(b"\x03") == b""
            assert list(server.received)[-2:] == [b"0ver", b"0VER"]
            server.stop()
            assert not server.alive
    finally:
        server.stop()
    assert not server.alive
    server.stop()  # idempotent


def test_pty_is_a_real_terminal_and_stop_closes_it(clock: SimClock) -> None:
    with SimulatedPumpServer(PumpModel(clock)) as server:
        assert server.url is not None and server.url.startswith("/dev/")
        fd = os.open(server.url, os.O_RDWR | os.O_NOCTTY)
        try:
            assert os.isatty(fd)
        finally:
            os.close(fd)
    threads = [t for t in threading.enumerate() if t.name.startswith("pump-sim")]
    assert threads == []


def test_socket_server_drops_clients_on_stop(clock: SimClock) -> None:
    server = SimulatedPumpServer(PumpModel(clock), transport="socket")
    url = server.start()
    host, port = url.removeprefix("socket://").split(":")
    client = socket.create_connection((host, int(port)), timeout=1.0)
    try:
        client.sendall(b"DIA\r")
        assert client.recv(64) == reply("00S14.43")
        server.stop()
        assert not server.alive
        assert client.recv(64) == b""  # server closed the connection
    finally:
        client.close()
        server.stop()


def test_server_rejects_unknown_transport_and_double_start(clock: SimClock) -> None:
    with pytest.raises(ValueError):
        SimulatedPumpServer(transport="usb")  # type: ignore[arg-type]
    with SimulatedPumpServer(PumpModel(clock)) as server, pytest.raises(RuntimeError):
        server.start()
