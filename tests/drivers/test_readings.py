"""Every reading of a healthy device, checked against what the simulator knows."""

import logging

import pytest

from tagstat.drivers import protocol
from tagstat.drivers.discovery import find_timetaggers
from tagstat.drivers.timetagger import DeviceMessage

ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super"}
TT20 = {"serial": "1809000LGG", "model": "Time Tagger 20", "usb_speed": "high"}
TTX = {"serial": "2023000TMV", "model": "Time Tagger X", "usb_speed": "super"}


def _one(env):
    (tagger,) = find_timetaggers(env.backend)
    return tagger


def _vendor_calls(env, serial, request=None):
    calls = env.simulation.device(serial).calls
    return [c for c in calls if c[0] == protocol.VENDOR_IN and request in (None, c[1])]


def test_info_is_read_once(usb_env):
    env = usb_env({"device": [ULTRA]})
    tagger = _one(env)
    first = tagger.info()
    assert first.major == protocol.PROTOCOL_MAJOR and first.has_sensors
    assert tagger.info() is first
    assert len(_vendor_calls(env, ULTRA["serial"], protocol.REQ_INFO)) == 1


def test_counters_follow_the_rate_over_time(usb_env):
    env = usb_env({"device": [dict(ULTRA, rate=[[0, 1e8], [5, 2e8]])]})
    tagger = _one(env)
    start = tagger.read_counters()
    assert (start.bytes_sent, start.uptime_ms, start.counter_bits) == (0, 0, 48)
    env.clock.advance(10)
    later = tagger.read_counters()
    assert later.bytes_sent == 5 * 100_000_000 + 5 * 200_000_000
    assert later.tags_sent == later.bytes_sent // 4
    assert later.uptime_ms == 10_000
    assert later.boot_id == start.boot_id


def test_counters_wrap_at_their_width(usb_env):
    device = dict(ULTRA, rate=[[0, 1000]], counter_bits=16, counter_start=65_000)
    env = usb_env({"device": [device]})
    tagger = _one(env)
    assert tagger.read_counters().bytes_sent == 65_000
    env.clock.advance(1)
    after = tagger.read_counters()
    assert after.counter_bits == 16
    assert after.bytes_sent == (65_000 + 1000) % 65_536
    assert (after.bytes_sent - 65_000) % (1 << after.counter_bits) == 1000


@pytest.mark.parametrize("device", [ULTRA, TTX], ids=["ultra", "x"])
def test_sensors(usb_env, device):
    env = usb_env({"device": [device]})
    sensors = _one(env).read_sensors()
    assert isinstance(sensors, dict) and sensors
    assert "fpga sensors" in sensors


def test_time_tagger_20_has_no_sensors_and_is_not_asked(usb_env):
    env = usb_env({"device": [TT20]})
    tagger = _one(env)
    tagger.info()
    before = len(env.simulation.device(TT20["serial"]).calls)
    assert tagger.read_sensors() == {}
    assert len(env.simulation.device(TT20["serial"]).calls) == before


def test_calibration_and_configuration(usb_env):
    env = usb_env({"device": [TTX]})
    tagger = _one(env)
    calibration = tagger.read_calibration()
    configuration = tagger.read_configuration()
    assert isinstance(calibration, dict) and calibration
    assert configuration["serial"] == TTX["serial"]  # raw data: the daemon masks it
    assert configuration["model"] == "Time Tagger X"


def test_a_document_larger_than_one_transfer_is_read_in_chunks(usb_env):
    env = usb_env({"device": [ULTRA]})
    tagger = _one(env)
    configuration = tagger.read_configuration()
    size = len(protocol.encode_document(configuration))
    chunks = protocol.chunk_count(size, tagger.info().max_transfer)
    assert chunks >= 2
    calls = _vendor_calls(env, ULTRA["serial"], protocol.REQ_CONFIGURATION)
    assert [wValue for _, _, wValue, _ in calls] == list(range(chunks))


MESSAGES = [[1, "warning", "TimeTagger '{serial}' overflow"], [2, "info", "b"], [3, "error", "c"]]


def test_messages_from_an_index_onward(usb_env):
    env = usb_env({"device": [dict(ULTRA, messages=MESSAGES)]})
    tagger = _one(env)
    assert tagger.read_messages(0) == ([], 0)
    env.clock.advance(5)
    messages, nxt = tagger.read_messages(0)
    assert nxt == 3
    assert [(m.seq, m.level) for m in messages] == [(0, "warning"), (1, "info"), (2, "error")]
    assert messages[0].text == "TimeTagger '1740000JEH' overflow"
    assert messages[0].uptime_ms == 1000
    assert tagger.read_messages(1) == (messages[1:], 3)
    assert tagger.read_messages(3) == ([], 3)


def test_a_usb2_link_warns_at_power_on(usb_env):
    env = usb_env({"device": [TT20]})
    messages, nxt = _one(env).read_messages(0)
    assert nxt == 1
    assert messages[0].level == "warning" and "USB 3.0" in messages[0].text


def test_message_sequence_numbers_wrap_modulo_2_16(usb_env):
    ticking = dict(ULTRA, messages=[[0.5, "info", "tick"]], loop_s=1)
    env = usb_env({"device": [ticking]})
    tagger = _one(env)
    env.clock.advance(65_535)  # one message a second: seq 0 .. 65534
    _, nxt = tagger.read_messages(65_534)
    assert nxt == 65_535
    env.clock.advance(3)
    messages, nxt = tagger.read_messages(65_535)
    assert [m.seq for m in messages] == [65_535, 0, 1]
    assert nxt == 2
    assert all(isinstance(m, DeviceMessage) and m.text == "tick" for m in messages)
    # start_seq is taken modulo 2**16, like wIndex
    assert tagger.read_messages(65_535 + 65_536) == (messages, 2)


def test_debug_logs_show_requests_and_sizes_but_no_payload(usb_env, caplog):
    env = usb_env({"device": [ULTRA]})
    tagger = _one(env)
    with caplog.at_level(logging.DEBUG, logger="tagstat.drivers"):
        tagger.read_configuration()
        tagger.read_counters()
    assert "bRequest=0xb4" in caplog.text and "bRequest=0xb1" in caplog.text
    assert "reply 48 bytes" in caplog.text
    assert ULTRA["serial"] not in caplog.text
