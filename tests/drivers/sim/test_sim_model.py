"""The simulated instrument's physics: counters, resets, plugging, persistence, messages."""

from fractions import Fraction

import pytest
from simhelpers import device_table

from tagstat.drivers import protocol
from tagstat.drivers.sim.model import (
    BYTES_PER_TAG,
    RING_SIZE,
    SimGone,
    SimStall,
    Simulation,
)
from tagstat.drivers.sim.scenario import default_scenario, parse_scenario

SERIAL = "1740000JEH"


def read_counters(device) -> protocol.Counters:
    reply = device.control_transfer(0xC0, protocol.REQ_COUNTERS, 0, 0, 64)
    return protocol.decode_counters(reply)


def read_document(device, request, start=0, transfer=protocol.DEFAULT_TRANSFER):
    """Read every chunk of a document as the driver would; returns (object, generations)."""
    parts, generations, chunk = [], set(), 0
    while True:
        reply = device.control_transfer(0xC0, request, chunk, start, transfer)
        header, payload = protocol.decode_chunk(reply)
        parts.append(payload)
        generations.add(header.generation)
        if header.last:
            return protocol.decode_document(b"".join(parts), header.crc32), generations
        chunk += 1


def test_bytes_are_the_exact_integral_across_rate_steps(make_sim, clock):
    sim = make_sim(device_table(rate=[[0, 1000], [10, 250_000_000], [12.5, 3]]))
    device = sim.device(SERIAL)
    clock.advance(20.25)
    c = read_counters(device)
    expected = 1000 * 10 + 250_000_000 * 2.5 + 3 * 7.75
    assert c.bytes_sent == int(expected)
    assert c.tags_sent == int(expected) // BYTES_PER_TAG["Time Tagger Ultra"]
    assert c.uptime_ms == 20250


def test_rate_before_the_first_step_is_zero_and_the_loop_repeats(make_sim, clock):
    sim = make_sim(device_table(rate=[[5, 100], [8, 1000]], loop_s=10))
    clock.advance(25)  # loops: [5,8)=300, [8,10)=2000 per loop; 2 loops + 5 s into the third
    assert read_counters(sim.device(SERIAL)).bytes_sent == 2 * 2300


def test_counters_wrap_at_counter_bits(make_sim, clock):
    start = (1 << 16) - 100
    sim = make_sim(device_table(rate=[[0, 50]], counter_bits=16, counter_start=start))
    device = sim.device(SERIAL)
    assert read_counters(device).bytes_sent == start
    clock.advance(3)  # 150 bytes: passes the 16-bit limit
    c = read_counters(device)
    assert (c.counter_bits, c.bytes_sent) == (16, 50)
    assert c.tags_sent == start + 150 // 4


def test_reset_gives_new_boot_id_and_restarts_counters(make_sim, clock):
    sim = make_sim(device_table(rate=[[0, 1000]], counter_start=7))
    device = sim.device(SERIAL)
    clock.advance(10)
    before = read_counters(device)
    address = device.address
    sim.reset(SERIAL)
    clock.advance(2)
    after = read_counters(device)
    assert before.bytes_sent == 10_007
    assert (after.bytes_sent, after.uptime_ms) == (2000, 2000)
    assert after.boot_id != before.boot_id and len(after.boot_id) == 16
    assert device.address != address  # a reboot re-enumerates


def test_unplugged_device_sends_nothing_but_keeps_running(make_sim, clock):
    sim = make_sim(device_table(rate=[[0, 100]]))
    device = sim.device(SERIAL)
    boot_id = read_counters(device).boot_id
    old_address = device.address
    clock.advance(10)
    sim.unplug(SERIAL)
    assert sim.devices() == []
    with pytest.raises(SimGone):
        read_counters(device)
    clock.advance(100)
    sim.replug(SERIAL)
    clock.advance(1)
    c = read_counters(device)
    assert (c.bytes_sent, c.uptime_ms, c.boot_id) == (1100, 111_000, boot_id)
    assert [d.serial for d in sim.devices()] == [SERIAL]
    assert device.address != old_address


def test_scripted_faults_apply_at_their_time(make_sim, clock):
    faults = [[5, "unplug"], [8, "replug"], [9, "stall"], [20, "reset"]]
    sim = make_sim(device_table(rate=[[0, 10]], faults=faults))
    clock.advance(6)
    assert sim.devices() == []
    clock.advance(3.5)
    device = sim.devices()[0]
    with pytest.raises(SimStall):
        read_counters(device)
    assert read_counters(device).bytes_sent == 50 + 15  # the stall was one shot
    clock.advance(100)  # now t = 109.5; the reset at t = 20 is applied at its own time
    assert read_counters(device).bytes_sent == 895


def test_restart_finds_the_same_devices_with_counters_advanced(tmp_path, clock):
    steps = {"serial": "2047000KBT", "model": "Time Tagger Ultra", "usb_speed": "super",
             "rate": [[0, 25_000_000], [60, 140_000_000]]}  # fmt: skip
    scenario = parse_scenario({"device": [steps]}, "test")
    first = Simulation(scenario, tmp_path, clock)
    serial = scenario.devices[0].serial
    clock.advance(50)
    before = read_counters(first.device(serial))
    first.unplug(serial)
    first.replug(serial)
    address = first.device(serial).address
    clock.advance(30)  # the daemon was down for 30 s
    second = Simulation(scenario, tmp_path, clock)
    after = read_counters(second.device(serial))
    assert after.boot_id == before.boot_id
    assert after.uptime_ms == 80_000
    # the rate steps from 25 to 140 MB/s at t = 60 s
    assert after.bytes_sent == before.bytes_sent + 10 * 25_000_000 + 20 * 140_000_000
    assert second.device(serial).address == address
    assert second.run_start_s == first.run_start_s


def test_in_memory_simulation_forgets_on_restart(tmp_path, clock):
    serial = default_scenario().devices[0].serial
    one = Simulation(default_scenario(), None, clock)
    clock.advance(5)
    two = Simulation(default_scenario(), None, clock)
    assert read_counters(one.device(serial)).uptime_ms == 5000
    assert read_counters(two.device(serial)).uptime_ms == 0
    assert list(tmp_path.iterdir()) == []


def test_several_devices_have_their_own_bus_address_and_port(make_sim):
    sim = make_sim(
        device_table(),
        device_table(serial="1809000LGG", model="Time Tagger 20"),
        device_table(serial="1910000OZQ", model="Time Tagger X"),
    )
    places = {(d.bus, d.address, d.port_numbers) for d in sim.devices()}
    assert len(places) == 3
    assert sim.device("1809000LGG").bus == 1 and sim.device(SERIAL).bus == 2


def test_documents_round_trip_in_small_chunks(make_sim):
    device = make_sim(device_table()).device(SERIAL)
    config, generations = read_document(device, protocol.REQ_CONFIGURATION, transfer=100)
    assert config["serial"] == SERIAL
    assert SERIAL in config["last saved file"]
    assert len(generations) == 1
    sensors, _ = read_document(device, protocol.REQ_SENSORS)
    assert {"fpga sensors", "temp sensors", "fans", "power supply"} <= set(sensors)
    assert set(sensors["power supply"]) == {"12.0V in", "2.5V A", "-5.0V D"}
    calibration, _ = read_document(device, protocol.REQ_CALIBRATION, transfer=17)
    assert len(calibration["channels"]) == 18


def test_sensors_drift_and_generation_changes_with_content(make_sim, clock):
    device = make_sim(device_table()).device(SERIAL)
    first = device.control_transfer(0xC0, protocol.REQ_SENSORS, 0, 0, 1024)
    clock.advance(300)
    second = device.control_transfer(0xC0, protocol.REQ_SENSORS, 0, 0, 1024)
    (h1, body1), (h2, body2) = protocol.decode_chunk(first), protocol.decode_chunk(second)
    assert body1 != body2 and h1.generation != h2.generation


def test_chunk_past_the_end_stalls(make_sim):
    device = make_sim(device_table()).device(SERIAL)
    with pytest.raises(SimStall):
        device.control_transfer(0xC0, protocol.REQ_CONFIGURATION, 500, 0, 1024)


def test_time_tagger_20_has_no_sensors_and_warns_about_usb2(make_sim):
    device = make_sim(device_table(serial="1809000LGG", model="Time Tagger 20")).device(
        "1809000LGG"
    )
    info = protocol.decode_info(device.control_transfer(0xC0, protocol.REQ_INFO, 0, 0, 12))
    assert not info.has_sensors
    with pytest.raises(SimStall):
        device.control_transfer(0xC0, protocol.REQ_SENSORS, 0, 0, 1024)
    messages, _ = read_document(device, protocol.REQ_MESSAGES)
    assert messages["messages"][0]["text"] == (
        "The TimeTagger '1809000LGG' is not connected by USB 3.0, its performance will be low."
    )


def test_unknown_vendor_request_stalls_and_calls_are_recorded(make_sim):
    device = make_sim(device_table()).device(SERIAL)
    with pytest.raises(SimStall):
        device.control_transfer(0xC0, 0xEE, 0, 0, 64)
    with pytest.raises(SimStall):
        device.control_transfer(0x40, protocol.REQ_INFO, 0, 0, b"x")
    assert device.calls == [(0xC0, 0xEE, 0, 0), (0x40, protocol.REQ_INFO, 0, 0)]


def test_messages_appear_at_their_time_with_the_serial(make_sim, clock):
    sim = make_sim(device_table(messages=[[10, "error", "E on {serial}"], [20, "warning", "W"]]))
    device = sim.device(SERIAL)
    clock.advance(15)
    doc, _ = read_document(device, protocol.REQ_MESSAGES)
    assert doc["next"] == 1
    assert doc["messages"] == [
        {"seq": 0, "uptime_ms": 10_000, "level": "error", "text": f"E on {SERIAL}"}
    ]
    clock.advance(10)
    doc, _ = read_document(device, protocol.REQ_MESSAGES, start=1)
    assert [m["seq"] for m in doc["messages"]] == [1] and doc["next"] == 2


def test_message_ring_drops_old_messages_and_seq_wraps(make_sim, clock):
    sim = make_sim(device_table(messages=[[0.5, "warning", "tick"]], loop_s=1))
    device = sim.device(SERIAL)
    clock.advance(70_000)  # 70,000 messages: seq wrapped past 65,536
    doc, _ = read_document(device, protocol.REQ_MESSAGES, start=0)
    assert doc["next"] == 70_000 % protocol.SEQ_MODULO
    assert len(doc["messages"]) == RING_SIZE
    assert doc["messages"][-1]["seq"] == (70_000 - 1) % protocol.SEQ_MODULO
    assert doc["dropped"] == (70_000 % protocol.SEQ_MODULO) - RING_SIZE
    start = (doc["next"] - 3) % protocol.SEQ_MODULO
    tail, _ = read_document(device, protocol.REQ_MESSAGES, start=start)
    assert [m["seq"] for m in tail["messages"]] == [start, start + 1, start + 2]
    assert tail["dropped"] == 0


def test_message_seq_wraps_across_zero(make_sim, clock):
    sim = make_sim(device_table(messages=[[0.5, "warning", "tick"]], loop_s=1))
    device = sim.device(SERIAL)
    clock.advance(protocol.SEQ_MODULO + 2)
    doc, _ = read_document(device, protocol.REQ_MESSAGES, start=protocol.SEQ_MODULO - 2)
    assert [m["seq"] for m in doc["messages"]] == [65534, 65535, 0, 1]


def test_garbage_is_deterministic_and_one_shot(make_sim):
    def garbage_reply(sim):
        sim.inject(SERIAL, "garbage")
        return sim.device(SERIAL).control_transfer(0xC0, protocol.REQ_COUNTERS, 0, 0, 64)

    a, b = garbage_reply(make_sim(device_table(), state_dir=None)), None
    b = garbage_reply(make_sim(device_table(), state_dir=None))
    assert a == b and len(a) == protocol.COUNTERS.size
    with pytest.raises(protocol.DecodeError):
        protocol.decode_counters(a)


def test_timeline_integral_is_exact_for_fractional_times():
    from tagstat.drivers.sim.scenario import DeviceScenario
    from tagstat.drivers.sim.timeline import Timeline

    line = Timeline(DeviceScenario(SERIAL, "Time Tagger X", "super", rate=((0.1, 3.0),)))
    assert line.integral(0, 0.3) == Fraction(3) * (Fraction(0.3) - Fraction(0.1))


def test_events_while_the_daemon_was_down_apply_at_their_own_time(make_sim, clock, tmp_path):
    table = device_table(rate=[[0, 10]], faults=[[20, "unplug"], [50, "replug"]])
    make_sim(table)
    clock.advance(100)  # down from t=0 to t=100
    device = make_sim(table).device(SERIAL)
    assert read_counters(device).bytes_sent == 20 * 10 + 50 * 10


def test_corrupt_state_file_says_to_delete_it(make_sim, tmp_path):
    from tagstat.drivers.sim.state import SimulatorStateError

    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "state.json").write_text('{"version": 2, "devices": {"x": 3}}')
    with pytest.raises(SimulatorStateError, match="delete it"):
        make_sim(device_table())


def test_a_state_file_of_an_older_format_starts_a_fresh_run(make_sim, tmp_path, caplog):
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "state.json").write_text('{"version": 1, "devices": {"x": 3}}')
    assert read_counters(make_sim(device_table()).device(SERIAL)).uptime_ms == 0
    assert "starting a fresh simulated run" in caplog.text


def test_the_state_file_holds_no_serial_and_no_message_text(make_sim, tmp_path, clock):
    table = device_table(messages=[[1, "warning", "saved run_42.ttbin on {serial}"]])
    sim = make_sim(table)
    clock.advance(5)
    sim.advance()
    data = (tmp_path / "sim" / "state.json").read_bytes()
    assert SERIAL.encode() not in data and b"run_42" not in data
    restarted = make_sim(table)  # the daemon restarts; the instrument kept its ring
    texts = [m["text"] for m in restarted.device(SERIAL)._messages_document(0)["messages"]]
    assert texts == [f"saved run_42.ttbin on {SERIAL}"]
