"""The service's masking boundary: serials seen on an earlier day are still masked exactly,
though no serial is ever stored; only their keyed pseudonyms and lengths are."""

from service_sim import DEVICE, SERIAL, SimService


def test_a_serial_seen_before_a_restart_is_masked_exactly_after_it(tmp_path):
    first = SimService(tmp_path / "home")
    first.poll(2)
    masked = first.service.masker.masked_serial(SERIAL)
    first.close()
    assert SERIAL.encode() not in first.db_bytes()
    other = DEVICE | {"serial": "1809000LGG"}
    second = SimService(tmp_path / "home", other)  # the first unit is not attached now
    try:
        second.poll(1)
        assert second.service.store.get_setting("serial_lengths") == [10]
        m = second.service.masker
        # exactly, in any case, inside other words: by its keyed digest (the pseudonym), not
        # only by its shape (which would give a bare "[serial]")
        assert m.scrub_text(f"sync with x{SERIAL.lower()}y") == f"sync with x{masked}y"
        assert m.scrub_serials(f"ref {SERIAL}") == f"ref {masked}"
    finally:
        second.close()
