"""The documents a simulated Time Tagger serves: sensors, calibration, configuration.

Each is a nested dict shaped like the vendor API's ``getSensorData()`` and
``getConfiguration()`` (key names taken from the vendor software, values made
up but plausible). Sensors drift slowly and deterministically with time and
are sampled once per ``SENSOR_PERIOD_S``, as a device's sensor controller
would, so a document read in several chunks is normally consistent. The
configuration deliberately contains the serial twice, once inside a file path
a user chose, so the daemon's masking gets exercised.
"""

import math

SENSOR_PERIOD_S = 1.0

CHANNELS = {"Time Tagger 20": 8, "Time Tagger Ultra": 18, "Time Tagger X": 20}
FIRMWARE = {
    "Time Tagger 20": "TT-20, FW 2, TS 2017-06-21 14:02:11, OK 1.20",
    "Time Tagger Ultra": "TT-Ultra, FW 3, TS 2018-11-13 22:57:32, OK 1.30",
    "Time Tagger X": "TT-X, FW 5, TS 2022-09-05 09:41:17, OK 1.40",
}
HARDWARE_BUFFER_TAGS = {
    "Time Tagger 20": 8 * 2**20,
    "Time Tagger Ultra": 64 * 2**20,
    "Time Tagger X": 64 * 2**20,
}
RESOLUTION = {
    "Time Tagger 20": "Standard",
    "Time Tagger Ultra": "HighResA",
    "Time Tagger X": "HighResB",
}
PCB_VERSION = {
    "Time Tagger 20": "TT20 v1.2",
    "Time Tagger Ultra": "TTU v2.1",
    "Time Tagger X": "TTX v1.0",
}


def _drift(base: float, amplitude: float, period_s: float, t_s: float, digits: int = 2) -> float:
    return round(base + amplitude * math.sin(2 * math.pi * t_s / period_s), digits)


def sensors(model: str, t_s: float, uptime_s: float, rate_bytes_per_s: float) -> dict:
    """Sensor readings at scenario time ``t_s`` (sampled every ``SENSOR_PERIOD_S``)."""
    t = math.floor(t_s / SENSOR_PERIOD_S) * SENSOR_PERIOD_S
    warm = 1 - math.exp(-max(uptime_s, 0) / 900)  # the board warms up over ~15 minutes
    fpga = _drift(48 + 9 * warm, 0.6, 600, t, 1)

    def rail(volt: float, curr: float, phase_s: float) -> dict:
        v = _drift(volt, abs(volt) * 0.002, 900, t + phase_s, 3)
        a = _drift(curr, curr * 0.03, 300, t + phase_s, 3)
        return {"volt": v, "curr": a, "pwr": round(abs(v) * a, 3)}

    return {
        "fpga sensors": {"temp": fpga, "vccint": _drift(1.0, 0.004, 700, t, 3)},
        "temp sensors": {
            "board": _drift(35 + 6 * warm, 0.4, 1200, t, 1),
            "clock": _drift(39 + 5 * warm, 0.3, 800, t, 1),
        },
        "fans": {
            "fan controller": {"temp": _drift(33 + 4 * warm, 0.3, 1000, t, 1)},
            "fan 1": {
                "RPM": int(_drift(2400 + 600 * warm, 40, 400, t, 0)),
                "duty cycle": _drift(0.35 + 0.1 * warm, 0.01, 400, t, 3),
                "tachometer": "ok",
            },
        },
        "power supply": {
            "12.0V in": rail(12.0, 1.45, 0),
            "2.5V A": rail(2.5, 0.82, 100),
            "-5.0V D": rail(-5.0, 0.21, 200),
        },
        "USB bandwidth": {"MB/s": round(rate_bytes_per_s / 1e6, 1)},
        "USB link": {
            # rare, slowly increasing error counts, as on a long-running healthy link
            "PHY errors": int(t // 7200),
            "link errors": int(t // 86400),
            "recovery count": int(t // 43200),
        },
    }


def calibration(model: str, serial: str) -> dict:
    """Factory calibration: fixed per device, derived from the serial so it is stable."""
    seed = sum(serial.encode())
    channels = CHANNELS[model]
    return {
        "calibration date": f"20{serial[:2]}-{int(serial[2:4]) % 12 + 1:02d}-17T10:24:00Z",
        "reference clock": {"frequency Hz": 500_000_000, "offset ppb": (seed % 41) - 20},
        "channels": {
            str(ch): {
                "delay ps": 1000 + (seed * (ch + 3)) % 230,
                "offset ps": ((seed * (ch + 7)) % 61) - 30,
                "rms jitter ps": 8 if model != "Time Tagger 20" else 34,
            }
            for ch in range(1, channels + 1)
        },
        "status": "OK",
    }


def configuration(model: str, serial: str, firmware: str | None) -> dict:
    """Settings as ``getConfiguration()`` would report them."""
    channels = CHANNELS[model]
    return {
        "serial": serial,
        "model": model,
        "resolution": RESOLUTION[model],
        "firmware version": firmware or FIRMWARE[model],
        "hardware buffer size": HARDWARE_BUFFER_TAGS[model],
        "PCB version": PCB_VERSION[model],
        "PCB UID": f"{sum(serial.encode()) * 2654435761 % 2**48:012X}",
        "FPGA ID": f"{sum(ord(c) * 31**i for i, c in enumerate(serial)) % 2**56:014X}",
        "channels": {
            str(ch): {
                "trigger level": 0.5 if ch % 2 else -0.25,
                "deadtime": 2000 if model == "Time Tagger Ultra" else 6000,
                "event divider": 1,
                "input delay": 0,
                "test signal": False,
            }
            for ch in range(1, channels + 1)
        },
        "measurements": [
            {"type": "Countrate", "channels": [1, 2], "running": True},
            {"type": "Correlation", "channels": [1, 2], "binwidth": 10, "n_bins": 1000},
        ],
        "virtual channels": [{"type": "Coincidence", "channels": [1, 2], "window": 1000}],
        "last saved file": f"C:/Users/lab/Documents/dumps/{serial}_run7.ttbin",
    }
