"""The New Era driver against the simulated pump over a real pty (and once over a socket).

No pyserial mocks: every test goes through ``serial.serial_for_url`` to a
:class:`SimulatedPumpServer`, so the bytes on the wire are the ones a real NE-1000 sees
(the server records them in ``server.received``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from devices.base import DeviceError, DeviceProtocolError, DeviceRefused, DeviceTimeout, Pump
from devices.bench.clock import SimClock
from devices.pump_newera import (
    NewEraPump,
    PumpAlarm,
    PumpRefused,
    choose_rate_units,
    format_number,
    parse_number,
)
from devices.pump_sim import PumpModel, SimulatedPumpServer

pytestmark = pytest.mark.timeout(30)

FAST = 0.3  # reply timeout for tests that wait for silence or a truncated reply


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def server(clock: SimClock) -> Iterator[SimulatedPumpServer]:
    srv = SimulatedPumpServer(PumpModel(clock))
    srv.start()
    yield srv
    srv.stop()
    assert not srv.alive


@pytest.fixture
def pump(server: SimulatedPumpServer) -> Iterator[NewEraPump]:
    assert server.url is not None
    p = NewEraPump(server.url, timeout_s=FAST)
    yield p
    p.close()


def sent(server: SimulatedPumpServer) -> list[bytes]:
    return list(server.received)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "text"),
    [(7, "7.000"), (12.5, "12.50"), (123.45, "123.5"), (1234, "1234"), (9.9996, "10.00"), (0.0004, "0.000")],
)
def test_format_number_keeps_four_digits(value: float, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 9999.5, 12345])
def test_format_number_rejects_what_does_not_fit(bad: float) -> None:
    with pytest.raises(ValueError):
        format_number(bad)


def test_parse_number_is_strict() -> None:
    assert parse_number("12.50") == 12.5
    assert parse_number(".5") == 0.5
    for bad in ("", "1e3", "-1", "1.2.3", " 1"):
        with pytest.raises(ValueError):
            parse_number(bad)


@pytest.mark.parametrize(
    ("ml_per_h", "expected"),
    [
        (7.0, ("7.000", "MH")),
        (12.5, ("12.50", "MH")),
        (1234.0, ("1234", "MH")),
        (0.005, ("5.000", "UH")),  # more significant digits than "0.005" ml/h
        (1234.5, ("20.57", "MM")),  # closer than "1234" ml/h
        (20000.0, ("333.3", "MM")),  # does not fit in ml/h at all
    ],
)
def test_choose_rate_units(ml_per_h: float, expected: tuple[str, str]) -> None:
    assert choose_rate_units(ml_per_h) == expected


def test_choose_rate_units_rejects_impossible_rates() -> None:
    for bad in (0.0, -1.0, float("nan"), 1e7, 1e-8):
        with pytest.raises(ValueError):
            choose_rate_units(bad)


# ----------------------------------------------------------------------------- over the pty


def test_open_probes_the_pump(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    assert isinstance(pump, Pump)
    assert sent(server) == [b"0", b"0VER"]
    ident = pump.identity()
    assert ident["model"] == "NE-1000"
    assert ident["firmware"] == "3.928"
    assert ident["port"] == server.url


@pytest.mark.parametrize(
    ("diameter", "ml_per_h", "wire"),
    [
        (4.699, 0.005, b"0RAT5.000UH"),
        (4.699, 0.45678, b"0RAT7.613UM"),
        (4.699, 7.0, b"0RAT7.000MH"),
        (26.59, 12.5, b"0RAT12.50MH"),
        (26.59, 1234.0, b"0RAT1234MH"),
        (26.59, 1234.5, b"0RAT20.57MM"),
    ],
)
def test_rate_set_and_read_back(
    pump: NewEraPump, server: SimulatedPumpServer, diameter: float, ml_per_h: float, wire: bytes
) -> None:
    pump.set_diameter(diameter)
    pump.set_rate(ml_per_h)
    assert sent(server)[-1] == wire
    assert server.model.rate_ml_per_h == pytest.approx(ml_per_h, rel=5e-4)
    assert pump.rate_ml_per_h() == pytest.approx(ml_per_h, rel=5e-4)
    assert pump.status().rate_ml_per_h == pytest.approx(ml_per_h, rel=5e-4)


def test_diameter_and_direction(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    pump.set_diameter(26.59)
    assert sent(server)[-1] == b"0DIA26.59"
    assert pump.diameter_mm() == pytest.approx(26.59)
    assert pump.direction() == "infuse"
    pump.set_direction("withdraw")
    assert server.model.direction == "withdraw"
    assert pump.status().direction == "withdraw"
    pump.set_direction("reverse")
    assert pump.direction() == "infuse"
    with pytest.raises(ValueError):
        pump.set_direction("sideways")


def test_run_and_stop_show_in_status_and_flow(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    pump.set_rate(3.0)
    assert server.flow_ml_per_h() == 0.0
    assert not pump.status().running
    pump.run()
    assert pump.prompt == "I"
    status = pump.status()
    assert status.running and status.direction == "infuse" and status.alarm is None
    assert server.model.running
    assert server.flow_ml_per_h() == pytest.approx(3.0)
    pump.stop()
    assert sent(server)[-2:] == [b"0STP", b"0STP"]  # pause, then stop
    assert pump.prompt == "S"
    assert not pump.status().running
    assert server.flow_ml_per_h() == 0.0
    before = len(sent(server))
    pump.stop()  # already stopped: one STP is enough
    assert sent(server)[before:] == [b"0STP"]


def test_pause_resumes_the_volume_target(
    pump: NewEraPump, server: SimulatedPumpServer, clock: SimClock
) -> None:
    pump.set_diameter(4.699)
    pump.set_rate(6.0)
    pump.set_volume_target(0.05)
    pump.run()
    clock.advance(20.0)  # 33.3 ul of 50
    pump.pause()
    assert pump.prompt == "P" and server.flow_ml_per_h() == 0.0
    pump.run()
    clock.advance(60.0)
    assert pump.dispensed()[0] == pytest.approx(0.05, rel=1e-3)  # only the remaining 16.7 ul


def test_dispensed_volume_grows_while_running(pump: NewEraPump, clock: SimClock) -> None:
    pump.set_diameter(26.59)
    pump.set_rate(60.0)
    pump.clear_dispensed()
    pump.run()
    clock.advance(60.0)  # 1 ml
    first = pump.status().dispensed_ml
    clock.advance(30.0)
    assert first == pytest.approx(1.0, rel=1e-3)
    assert pump.status().dispensed_ml == pytest.approx(1.5, rel=1e-3)
    pump.set_direction("withdraw")  # allowed while pumping without a volume target
    clock.advance(60.0)
    assert pump.dispensed() == pytest.approx((1.5, 1.0), rel=1e-3)
    pump.stop()
    clock.advance(600.0)
    assert pump.status().dispensed_ml == pytest.approx(2.5, rel=1e-3)


def test_volume_target_stops_the_pump(pump: NewEraPump, clock: SimClock, server: SimulatedPumpServer) -> None:
    pump.set_diameter(4.699)  # microlitre units
    pump.set_rate(6.0)
    pump.set_volume_target(0.05)
    assert sent(server)[-2:] == [b"0VOLUL", b"0VOL50.00"]
    assert pump.volume_target_ml() == pytest.approx(0.05)
    pump.run()
    clock.advance(60.0)
    status = pump.status()
    assert not status.running
    assert status.dispensed_ml == pytest.approx(0.05, rel=1e-3)


def test_rate_change_while_pumping_keeps_the_pump_units(
    pump: NewEraPump, server: SimulatedPumpServer
) -> None:
    pump.set_rate(7.0)
    pump.run()
    pump.set_rate(0.5)  # would be 500.0UH, refused (?NA) while pumping -> re-sent as 0.500MH
    assert sent(server)[-3:] == [b"0RAT500.0UH", b"0RAT", b"0RAT0.500MH"]
    assert server.model.rate_setting == (0.5, "MH")
    assert server.flow_ml_per_h() == pytest.approx(0.5)


def test_rate_out_of_range_is_refused(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    pump.set_diameter(14.43)  # a 10 ml syringe tops out near 625 ml/h
    with pytest.raises(DeviceRefused, match="out of range") as info:
        pump.set_rate(5000.0)
    assert isinstance(info.value, PumpRefused) and info.value.code == "OOR"
    assert "RAT5000MH" in str(info.value)
    assert server.model.rate_ml_per_h == pytest.approx(1.0)  # unchanged
    with pytest.raises(DeviceRefused, match="out of range"):
        pump.set_rate(1e9)  # not even expressible: refused by the driver, nothing sent
    assert sent(server)[-1] == b"0RAT5000MH"


def test_other_refusals_carry_the_pump_code(pump: NewEraPump) -> None:
    pump.run()
    with pytest.raises(PumpRefused, match="not applicable") as info:
        pump.set_diameter(20.0)  # the pump will not change syringe while pumping
    assert info.value.code == "NA"
    with pytest.raises(PumpRefused, match="not recognised") as info:
        pump._exchange("PUR")  # purge is not simulated: answered with a bare "?"
    assert info.value.code == ""


def test_alarm_raises_latches_and_clears(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    pump.set_rate(3.0)
    pump.run()
    server.model.raise_alarm("S")
    with pytest.raises(PumpAlarm, match="stalled") as info:
        pump.set_rate(4.0)
    assert info.value.code == "S" and info.value.command == "RAT4.000MH"
    assert isinstance(info.value, DeviceError)
    assert server.model.rate_ml_per_h == pytest.approx(3.0)  # the pump did not execute it
    status = pump.status()
    assert status.alarm == "S" and not status.running
    assert pump.clear_alarm() == "S"
    assert pump.status().alarm is None
    assert pump.clear_alarm() is None
    pump.set_rate(4.0)
    assert server.model.rate_ml_per_h == pytest.approx(4.0)


def test_stop_gets_through_an_alarm(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    pump.run()
    server.model.raise_alarm("S")
    pump.stop()  # must not raise: stopping is what error handling relies on
    assert sent(server)[-2:] == [b"0STP", b"0STP"]  # the first one was answered by the alarm
    assert pump.prompt == "S"
    assert pump.status().alarm == "S"  # still visible to whoever polls


def test_alarm_met_by_status_is_reported_not_raised(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    server.model.raise_alarm("R")
    status = pump.status()
    assert status.alarm == "R"
    assert status.rate_ml_per_h == pytest.approx(1.0)  # the other fields are still filled


def test_power_up_alarm_at_open_is_latched(server: SimulatedPumpServer) -> None:
    server.model.raise_alarm("R")
    assert server.url is not None
    with NewEraPump(server.url, timeout_s=FAST) as p:
        assert p.status().alarm == "R"
        assert p.clear_alarm() == "R"


@pytest.mark.parametrize(
    ("mode", "why"),
    [("noise", "not STX"), ("truncate", "truncated"), ("address", "from address 1")],
)
def test_garbled_reply_is_a_protocol_error(
    pump: NewEraPump, server: SimulatedPumpServer, mode: str, why: str
) -> None:
    server.garble_next_reply(mode)  # type: ignore[arg-type]
    with pytest.raises(DeviceProtocolError, match=why) as info:
        pump.diameter_mm()
    message = str(info.value)
    assert "'DIA'" in message and "\\x02" in message  # names the command and the raw bytes
    assert pump.diameter_mm() == pytest.approx(14.43)  # the next exchange is clean again


def test_unparseable_query_data_is_a_protocol_error(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    server.model.firmware = "NE1000 v3"
    with pytest.raises(DeviceProtocolError, match="VER"):
        pump._query_version()


def test_silence_is_a_timeout(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    server.silent = True
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match="no reply to 'RUN'"):
        pump.run()
    assert time.monotonic() - start < FAST + 0.5
    assert not server.model.running
    server.silent = False
    pump.run()
    assert server.model.running


def test_wrong_address_times_out_at_open_and_releases_the_port(server: SimulatedPumpServer) -> None:
    assert server.url is not None
    with pytest.raises(DeviceTimeout, match="address 3"):
        NewEraPump(server.url, address=3, timeout_s=FAST)
    with NewEraPump(server.url, address=0, timeout_s=FAST) as p:  # port was released
        assert p.diameter_mm() == pytest.approx(14.43)


def test_close_twice_and_use_after_close(server: SimulatedPumpServer) -> None:
    assert server.url is not None
    with NewEraPump(server.url, timeout_s=FAST) as p:
        p.set_rate(2.0)
    p.close()
    p.close()
    with pytest.raises(DeviceError, match="after close"):
        p.status()


def test_bad_arguments_are_rejected_before_sending(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    before = sent(server)
    for call in (lambda: pump.set_rate(-1.0), lambda: pump.set_diameter(float("nan"))):
        with pytest.raises(ValueError):
            call()
    assert sent(server) == before
    with pytest.raises(ValueError):
        NewEraPump("/dev/null", address=100)


def test_pumps_on_one_port_share_it_and_its_lock(pump: NewEraPump, server: SimulatedPumpServer) -> None:
    assert server.url is not None
    other = NewEraPump(server.url, timeout_s=FAST)
    errors: list[BaseException] = []

    def hammer(p: NewEraPump, rate: float) -> None:
        try:
            for _ in range(15):
                p.set_rate(rate)
                p.status()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(p, r)) for p, r in ((pump, 2.0), (other, 3.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert not any(t.is_alive() for t in threads)
    other.close()
    assert pump.diameter_mm() == pytest.approx(14.43)  # closing one pump left the shared port open


def test_server_gone_is_a_device_error(clock: SimClock) -> None:
    server = SimulatedPumpServer(PumpModel(clock))
    url = server.start()
    p = NewEraPump(url, timeout_s=FAST)
    try:
        server.stop()
        with pytest.raises(DeviceError):
            p.status()
    finally:
        p.close()
        server.stop()


def test_over_a_socket(clock: SimClock) -> None:
    with SimulatedPumpServer(PumpModel(clock), transport="socket") as server:
        assert server.url is not None and server.url.startswith("socket://")
        with NewEraPump(server.url, timeout_s=FAST) as p:
            p.set_diameter(26.59)
            p.set_rate(12.5)
            p.run()
            clock.advance(3600.0)
            status = p.status()
            assert status.running and status.rate_ml_per_h == pytest.approx(12.5)
            assert status.dispensed_ml == pytest.approx(12.5, rel=1e-3)
            server.model.raise_alarm("S")
            with pytest.raises(PumpAlarm):
                p.run()
            server.silent = True
            with pytest.raises(DeviceTimeout):
                p.stop()
    assert not server.alive
