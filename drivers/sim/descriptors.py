"""USB descriptors of a simulated Time Tagger: built as bytes, parsed back for pyusb.

The simulated device answers GET_DESCRIPTOR with the same bytes a real one
sends on the wire, and the pyusb backend parses those bytes back into the
attribute objects pyusb expects, so both the pure-Python backend and the
umockdev transport see one set of descriptors. Layout: one configuration,
interface 0 with one bulk IN endpoint 0x81 (the tag stream the vendor
software reads; nothing in tagstat may claim it), plus the SuperSpeed
endpoint companion on a USB 3 link.
"""

import struct
import types

DEVICE = struct.Struct("<BBHBBBBHHHBBBB")
CONFIG = struct.Struct("<BBHBBBBB")
INTERFACE = struct.Struct("<BBBBBBBBB")
ENDPOINT = struct.Struct("<BBBBHB")
SS_COMPANION = struct.Struct("<BBBBH")

DT_DEVICE, DT_CONFIG, DT_STRING, DT_INTERFACE, DT_ENDPOINT = 1, 2, 3, 4, 5
DT_SS_ENDPOINT_COMPANION = 0x30
LANGID_EN_US = 0x0409
STREAM_ENDPOINT = 0x81


def device_descriptor(super_speed: bool, vendor_id: int, product_id: int, bcd: int) -> bytes:
    return DEVICE.pack(
        DEVICE.size,
        DT_DEVICE,
        0x0300 if super_speed else 0x0200,
        0xFF,  # vendor-specific class, like Opal Kelly FrontPanel devices
        0x00,
        0x00,
        9 if super_speed else 64,  # ep0 max packet: 2**9 on SuperSpeed, 64 bytes on high speed
        vendor_id,
        product_id,
        bcd,
        1,  # iManufacturer
        2,  # iProduct
        3,  # iSerialNumber
        1,  # bNumConfigurations
    )


def configuration_descriptor(super_speed: bool) -> bytes:
    """The full configuration: config, interface 0, bulk IN 0x81 (+ companion)."""
    max_packet = 1024 if super_speed else 512
    tail = INTERFACE.pack(INTERFACE.size, DT_INTERFACE, 0, 0, 1, 0xFF, 0, 0, 0)
    tail += ENDPOINT.pack(ENDPOINT.size, DT_ENDPOINT, STREAM_ENDPOINT, 0x02, max_packet, 0)
    if super_speed:
        # bursts of 16 packets, as a streaming FPGA design would ask for
        tail += SS_COMPANION.pack(SS_COMPANION.size, DT_SS_ENDPOINT_COMPANION, 15, 0, 0)
    max_power = 112 if super_speed else 250  # units of 8 mA on USB 3, 2 mA on USB 2
    head = CONFIG.pack(CONFIG.size, DT_CONFIG, CONFIG.size + len(tail), 1, 1, 0, 0x80, max_power)
    return head + tail


def string_descriptor(text: str) -> bytes:
    body = text.encode("utf-16-le")
    return bytes([2 + len(body), DT_STRING]) + body


def langid_table() -> bytes:
    return bytes([4, DT_STRING]) + struct.pack("<H", LANGID_EN_US)


# -- parsing, for the pyusb backend -----------------------------------------

_DEVICE_FIELDS = (
    "bLength bDescriptorType bcdUSB bDeviceClass bDeviceSubClass bDeviceProtocol "
    "bMaxPacketSize0 idVendor idProduct bcdDevice iManufacturer iProduct iSerialNumber "
    "bNumConfigurations"
).split()
_CONFIG_FIELDS = (
    "bLength bDescriptorType wTotalLength bNumInterfaces bConfigurationValue "
    "iConfiguration bmAttributes bMaxPower"
).split()
_INTERFACE_FIELDS = (
    "bLength bDescriptorType bInterfaceNumber bAlternateSetting bNumEndpoints "
    "bInterfaceClass bInterfaceSubClass bInterfaceProtocol iInterface"
).split()
_ENDPOINT_FIELDS = "bLength bDescriptorType bEndpointAddress bmAttributes wMaxPacketSize bInterval"


def parse_device(data: bytes, **extra) -> types.SimpleNamespace:
    """The device descriptor as attributes, plus ``extra`` (bus, address, speed, ...)."""
    return types.SimpleNamespace(
        **dict(zip(_DEVICE_FIELDS, DEVICE.unpack(data), strict=True)), **extra
    )


def parse_configuration(data: bytes) -> types.SimpleNamespace:
    """The configuration with ``interfaces`` (each with ``endpoints``), as libusb parses it."""
    config = types.SimpleNamespace(
        **dict(zip(_CONFIG_FIELDS, CONFIG.unpack_from(data), strict=True))
    )
    config.extra_descriptors, config.interfaces = [], []
    current = config
    pos = config.bLength
    while pos < len(data):
        length, kind = data[pos], data[pos + 1]
        raw = data[pos : pos + length]
        if kind == DT_INTERFACE:
            current = types.SimpleNamespace(
                **dict(zip(_INTERFACE_FIELDS, INTERFACE.unpack(raw), strict=True))
            )
            current.extra_descriptors, current.endpoints = [], []
            config.interfaces.append(current)
        elif kind == DT_ENDPOINT:
            values = ENDPOINT.unpack(raw)
            current = types.SimpleNamespace(
                **dict(zip(_ENDPOINT_FIELDS.split(), values, strict=True))
            )
            current.bRefresh = current.bSynchAddress = 0
            current.extra_descriptors = []
            config.interfaces[-1].endpoints.append(current)
        else:  # class-specific or companion descriptors belong to the one before them
            current.extra_descriptors.extend(raw)
        pos += length
    return config
