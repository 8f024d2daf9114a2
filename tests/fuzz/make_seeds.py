#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<name>/) and the TOML
dictionary from the protocols' test vectors (protocols.md, the unit tests' hex vectors) and the
shipped sample configs. Run from anywhere; it rewrites only seed-*.bin/txt files it owns, so
inputs added by hand or merged from fuzzing stay. Needs python3 and, for the signed manifests,
openssl (the key is the fuzz target's own, see fuzz_firmware_manifest.cpp)."""
import base64, json, os, re, subprocess, struct, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def hx(s):
    return bytes.fromhex(re.sub(r"[^0-9A-Fa-f]", "", s))


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- JT/T 808 (protocols.md §1.6 and tests/unit/jt808_codec_test.cpp) ----
FRAMES = {
    "a-0200-2013": "7E 02 00 00 28 01 39 12 34 56 78 00 01 00 00 00 01 00 0C 00 03 01 75 88 59 07 09 E6 D1 00 0C 01 64 00 5A 24 05 20 08 30 15 01 04 00 01 7D 02 7D 01 30 01 1A 31 01 0C 86 7E",
    "b-8001": "7E 80 01 00 05 01 39 12 34 56 78 00 10 00 01 02 00 00 A7 7E",
    "c-8100": "7E 81 00 00 0B 01 39 12 34 56 78 00 11 00 02 00 41 55 54 48 31 32 33 34 A5 7E",
    "d-0002-2019": "7E 00 02 40 00 01 00 00 00 00 01 39 12 34 56 78 00 03 70 7E",
    "e-0102-2019": "7E 01 02 40 2C 01 00 00 00 00 01 39 12 34 56 78 00 04 08 41 55 54 48 31 32 33 34 38 36 31 32 33 34 35 36 37 38 39 30 31 32 33 56 31 2E 30 2E 30 00 00 00 00 00 00 00 00 00 00 00 00 00 00 06 7E",
    "f-0002-2013": "7E 00 02 00 00 01 39 12 34 56 78 00 02 30 7E",
    "smallchi-0200": "7E 02 00 00 26 12 34 56 78 90 12 00 7D 02 00 00 00 01 00 00 00 02 00 BA 7F 0E 07 E4 F1 1C 00 28 00 3C 00 00 18 10 15 10 10 10 01 04 00 00 00 64 02 02 00 7D 01 13 7E",
    "smallchi-8004-2019": "7E 80 04 40 06 01 00 00 00 00 12 34 56 78 90 12 00 01 19 12 02 10 10 10 51 7E",
    "xtream-0200-2019": "7e02004026010000000001391234432900000000006f0000001601dc9a0707456246007b004200032501292233440202006401040000000c417e",
    "8108-upgrade": "7e81080016013912344323000034313233343507762d312e322e330000000401020304887e",
    "0108-result": "7E 01 08 00 02 01 39 12 34 56 78 00 2A 00 00 11 7E",
    "8107-query": "7E 81 07 00 00 01 39 12 34 56 78 00 05 B3 7E",
    "0107-2019": "7e0107406301000000000139123443290000004231323334357465726d696e616c547970653132333435363738313131313132"
                 "32323232313233343536373839303132333435363738393031323334353637383930111122334455667788990968642d76312e"
                 "322e3309666d2d76332e322e310302137e",
}


def unescape(b):
    out, i = bytearray(), 0
    while i < len(b):
        if b[i] == 0x7D and i + 1 < len(b):
            out.append(0x7E if b[i + 1] == 2 else 0x7D)
            i += 2
        else:
            out.append(b[i])
            i += 1
    return bytes(out)


def escape_wrap(content):
    return b"\x7e" + content.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e"


def xor(b):
    x = 0
    for c in b:
        x ^= c
    return x


def body_of(frame_hex):
    c = unescape(hx(frame_hex)[1:-1])
    attr = c[2] << 8 | c[3]
    pos = 4 + (1 + 10 if attr & 0x4000 else 6) + 2 + (4 if attr & 0x2000 else 0)
    return c[pos:-1]


def frame(msg_id, body, v2019=False, serial=7, sub=None):
    attr = len(body) | (0x4000 if v2019 else 0) | (0x2000 if sub else 0)
    c = struct.pack(">HH", msg_id, attr)
    c += (b"\x01" + hx("00000000013912345678")) if v2019 else hx("013912345678")
    c += struct.pack(">H", serial)
    if sub:
        c += struct.pack(">HH", *sub)
    c += body
    return escape_wrap(c + bytes([xor(c)]))


for name, h in FRAMES.items():
    put("jt808_frame", name, hx(h))
put("jt808_frame", "glued", hx(FRAMES["f-0002-2013"]) + hx(FRAMES["a-0200-2013"])[1:])
put("jt808_frame", "garbage-then-frame", b"\x01\x02\x03GET / HTTP/1.1\r\n" + hx(FRAMES["b-8001"]))
put("jt808_frame", "subpackage", frame(0x8108, hx("34 31 32 33 34 35 07 76 2D 31 2E 32"), sub=(3, 1)))

loc = body_of(FRAMES["a-0200-2013"])
reg13 = struct.pack(">HH", 44, 0x0300) + b"SANI1" + b"SIM-808".ljust(20, b"\0") + b"T345678" + b"\x01" + "闽D12345".encode("gbk")
reg19 = struct.pack(">HH", 44, 0x0300) + b"SANI1".ljust(11, b"\0") + b"SIM-808".ljust(30, b"\0") + b"T345678".ljust(30, b"\0") + b"\x00" + b"LSVAU2180N2183294"
put("jt808_frame", "0100-2013", frame(0x0100, reg13))
put("jt808_frame", "0704-batch", frame(0x0704, struct.pack(">HB", 2, 1) + struct.pack(">H", len(loc)) + loc + struct.pack(">H", len(loc)) + loc))
BODIES = {
    "location-a": (0x00, loc),
    "location-smallchi": (0x00, body_of(FRAMES["smallchi-0200"])),
    "location-xtream": (0x00, body_of(FRAMES["xtream-0200-2019"])),
    "registration-2013": (0x01, reg13),
    "registration-2019": (0x11, reg19),
    "auth-2013": (0x02, b"AUTH1234"),
    "auth-2019": (0x12, body_of(FRAMES["e-0102-2019"])),
    "terminal-response": (0x03, hx("00 01 02 00 00")),
    "batch": (0x04, struct.pack(">HB", 2, 1) + struct.pack(">H", len(loc)) + loc + struct.pack(">H", len(loc)) + loc),
    "position-reply": (0x05, b"\x00\x07" + loc),
    "upgrade-result": (0x06, hx("00 01")),
    "attributes-2013": (0x07, hx("00 04 53 41 4E 49 31 53 49 4D 2D 38 30 38 00 00 00 00 00 00 00 00 00 00 00 00 00"
                                 " 54 33 34 35 36 37 38 89 86 00 12 34 56 78 90 12 34 06 48 57 2D 31 2E 30 05 32 2E 31 2E 30 03 01")),
    "attributes-2019": (0x17, body_of(FRAMES["0107-2019"])),
    "upgrade-package-2013": (0x08, hx("34 31 32 33 34 35 07 76 2D 31 2E 32 2E 33 00 00 00 04 01 02 03 04")),
    "upgrade-package-2019": (0x18, hx("00 53 41 4E 49 31 00 00 00 00 00 00 05 32 2E 31 2E 30 00 00 00 02 AB CD")),
    "upgrade-head": (0x09, bytes([0x34, 5, 4]) + b"SANI1" + "固件2.1".encode()),
    "text": (0x0A, "请到3号垃圾屋".encode()),
    "bcd": (0x0B, hx("24 05 20 08 30 15")),
    "any-parser": (0x0F, loc),
}
for name, (sel, body) in BODIES.items():
    put("jt808_body", name, bytes([sel]) + body)

# ---- Semtech GWMP (protocols.md §2) ----
EUI = hx("AA 55 5A 00 00 00 01 01")
rxpk = {"rxpk": [{"time": "2024-05-20T00:30:15.123456Z", "tmst": 3512348611, "chan": 0, "rfch": 0, "freq": 486.3,
                  "stat": 1, "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": -57, "lsnr": 9.8, "size": 23,
                  "data": "AAgHBgUEAwIBGAf25dTDsqErGj9BdEE="}]}
j = lambda o: json.dumps(o, separators=(",", ":")).encode()
put("gwmp", "push-data", hx("02 3A 7C 00") + EUI + j(rxpk))
put("gwmp", "push-data-stat", hx("02 3A 7D 00") + EUI + j({"stat": {"time": "2014-01-12 08:59:28 GMT", "lati": 46.24, "long": 3.2523,
                                                                    "alti": 145, "rxnb": 2, "rxok": 2, "rxfw": 2, "ackr": 100.0, "dwnb": 2, "txnb": 2}}))
v1 = base64.b64encode(hx("4034120B26802A000A00985DF8849DE74273")).decode()
put("gwmp", "push-data-two", hx("01 00 01 00") + EUI + j({"rxpk": [
    {"tmst": 1, "freq": 868.1, "stat": 1, "modu": "LORA", "datr": "SF12BW125", "codr": "4/8", "rssi": -120, "lsnr": -17.5, "size": 18, "data": v1},
    {"tmst": 2, "freq": 868.3, "chan": 1, "stat": -1, "modu": "FSK", "datr": 50000, "rssi": -80, "size": 3, "data": "AQID"}]}) + b"\0")
put("gwmp", "push-ack", hx("02 3A 7C 01"))
put("gwmp", "pull-data", hx("02 B1 9F 02") + EUI)
put("gwmp", "pull-ack", hx("02 B1 9F 04"))
put("gwmp", "pull-resp", hx("02 5E 21 03") + j({"txpk": {"imme": False, "tmst": 3517348611, "freq": 506.7, "rfch": 0, "powe": 17, "modu": "LORA",
                                                        "datr": "SF7BW125", "codr": "4/5", "ipol": True, "size": 17, "data": "IF6xqDle7Xd6iujgd/5/7hc="}}))
put("gwmp", "pull-resp-imme", hx("02 5E 22 03") + j({"txpk": {"imme": True, "freq": 505.3, "rfch": 0, "powe": 14, "modu": "LORA",
                                                             "datr": "SF12BW125", "codr": "4/5", "ipol": True, "ncrc": True, "size": 4, "data": "AQIDBA=="}}))
put("gwmp", "tx-ack", hx("02 5E 21 05") + EUI)
put("gwmp", "tx-ack-error", hx("02 5E 21 05") + EUI + j({"txpk_ack": {"error": "TOO_LATE"}}))
put("gwmp", "tx-ack-warn", hx("02 5E 21 05") + EUI + j({"txpk_ack": {"warn": "TX_POWER", "value": 14}}))

# ---- LoRaWAN PHYPayloads (protocols.md §3.1) ----
for name, h in {"v1-unconfirmed-up": "4034120B26802A000A00985DF8849DE74273",
                "v2-confirmed-up-2-blocks": "8034120B2600050002F66FF58589B16EAC167B26E04B8EFE7CE65CF7B6F48E352A",
                "v3-fport0-mac": "4034120B26002B0000864071D0C4",
                "v4-join-request": "0008070605040302011807F6E5D4C3B2A12B1A3F417441",
                "v5-join-accept": "205EB1A8395EED777A8AE8E077FE7FEE17",
                "v6-unconfirmed-up": "4034120B2600000001A624F68004A2",
                "lora-packet": "40F17DBE4900020001954378762B11FF0D",
                "fopts-down": "6034120B26A3010003020506"}.items():
    put("lorawan_phy", name, hx(h))

# ---- payload layouts (config/profiles/*.toml and the target's own profile) ----
put("lorawan_payload", "ultrasonic-fport2", bytes([2, 0]) + hx("01 9C 4E 00 EB 0E 1C 02"))
put("lorawan_payload", "compact-fport1", bytes([1, 1]) + hx("05 57 0A 04 00 00 AA 41"))
put("lorawan_payload", "compact-fport4", bytes([4, 1]) + hx("0C 70 11 01 00 F9"))
put("lorawan_payload", "every-type-fport7", bytes([7, 2]) + bytes((i * 37 + 11) & 0xFF for i in range(255)))
put("lorawan_payload", "every-type-any-port", bytes([9, 2]) + hx("FF FF FF FE"))
for p in ("bin-monitor-ultrasonic-v1.toml", "bin-monitor-compact-le-v1.toml"):
    text = open(os.path.join(ROOT, "config", "profiles", p)).read()
    put("payload_profile", p, "\n".join(l for l in text.splitlines() if not l.startswith("##")) + "\n")
src = open(os.path.join(HERE, "fuzz_lorawan_payload.cpp")).read()
put("payload_profile", "every-type.toml", src.split('R"(')[1].split(')"')[0])

# ---- ChirpStack (tests/unit/lorawan_codec_test.cpp) ----
put("chirpstack", "uplink", """{"deduplicationId":"3ac7e3c4-4401-4b8d-9386-a5c902f9202d","time":"2022-07-18T09:34:15.775023242+00:00",
"deviceInfo":{"tenantName":"ChirpStack","applicationName":"bins","deviceName":"b1","devEui":"0101010101010101","tags":{}},
"devAddr":"00189440","adr":true,"dr":1,"fCnt":4,"fPort":2,"confirmed":true,"data":"qrvM",
"rxInfo":[{"gatewayId":"0016c001f153a14c","uplinkId":4217106255,"rssi":-36,"snr":10.5,"channel":2},
{"gatewayId":"0016c001f153a14d","rssi":-30,"snr":10.5}],
"txInfo":{"frequency":867500000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7,"codeRate":"CR_4_5"}}}}""")
put("chirpstack", "strings", '{"deviceInfo":{"devEui":"a1b2c3d4e5f60718"},"fCnt":"4294967295","fPort":"223","data":"AQIDBA==",'
                             '"time":"2026-12-03T18:00:00.5+08:00","rxInfo":[{"rssi":"-100.5","snr":"-7"}],"dr":5}')
put("chirpstack", "minimal", '{"fCnt":0}')

# ---- small LoRaWAN text codecs: selector byte, then the text ----
for name, (sel, text) in {"hex": (0, b"2B7E151628AED2A6ABF7158809CF4F3C"), "eui": (1, b"0102030405060708"),
                          "base64": (2, b"AAgHBgUEAwIBGAf25dTDsqErGj9BdEE="), "datr": (3, b"SF7BW125"),
                          "mhz": (4, struct.pack("<d", 486.3)), "rfc3339": (5, b"2026-12-03T10:00:00.123456789Z"),
                          "plan": (6, b"CN470-510"), "devaddr": (7, b"260B1234")}.items():
    put("lorawan_text", name, bytes([sel]) + text)

# ---- NMEA (tests/unit/nmea_test.cpp) ----
NMEA = ["$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
        "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
        "$GPVTG,084.4,T,081.2,M,022.4,N,041.5,K,A*24",
        "$GNRMC,023000.000,A,2430.7380,N,11808.0520,E,12.5,45.0,211125,,,D*79",
        "$GNGGA,023000.000,2430.7380,N,11808.0520,E,2,21,0.6,12.0,M,-5.1,M,1.0,0000*4E",
        "$GNVTG,45.0,T,,M,12.5,N,23.2,K,D*22",
        "$GNRMC,083559.00,A,3339.5237,S,07032.1230,W,0.52,271.3,150624,,,A,V*0C",
        "$GPRMC,123519,V,,,,,,,230394,,,N*51",
        "$GPGGA,123519,,,,,0,00,99.99,,,,,,*45",
        "$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74"]
put("nmea", "rmc-gga-vtg", b"\x05" + "\r\n".join(NMEA[0:3]).encode() + b"\r\n")
put("nmea", "gn-epoch", b"\x03" + "\n".join(NMEA[3:6]).encode() + b"\n")
put("nmea", "south-west-no-fix", b"\x10" + "\r".join(NMEA[6:]).encode() + b"\r")
put("nmea", "midnight", b"\x07$GPRMC,235959,A,2430.7380,N,11808.0520,E,0.0,,311224,,,A*56\r\n"
                        b"$GPGGA,235959.80,2430.7380,N,11808.0520,E,1,09,1.0,10.0,M,0.0,M,,*62\r\n"
                        b"$GPGGA,000000,2430.7380,N,11808.0520,E,1,09,1.0,10.0,M,0.0,M,,*45\r\n")
put("nmea", "noise", b"\x01\xb5\x62\x01\x07binary$GPRMC,123519,A,48\r\n$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B\r\n")

# ---- Modbus values: type, orders, length/bit, registers ----
TYPES = ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string", "bool", "bit"]
MODBUS = {"u16": (0, 0, 0, "0102"), "i16": (1, 2, 0, "FF85"), "u32-cdab": (2, 1, 0, "5678 1234"), "i32": (3, 0, 0, "FFFF FFFE"),
          "u64": (4, 0, 0, "FFFF FFFF FFFF FFFF"), "i64-swapped": (5, 3, 0, "0100 0000 0000 0000"),
          "f32": (6, 0, 0, "41BA 0000"), "f32-nan": (6, 1, 0, "0000 7FC0"), "f64": (7, 0, 0, "400921FB54442D18"),
          "string": (8, 0, 4, "4752 2D32 3030 2020 0000"), "string-le": (8, 2, 1, "5247 2D32"),
          "bool": (9, 0, 0, "0001"), "bit": (10, 0, 13, "2000")}
for name, (t, orders, param, regs) in MODBUS.items():
    put("modbus_value", name, bytes([t, orders, param]) + hx(regs))
put("modbus_value", "type-name", bytes([8, 0, 124]) + b"f32")

# ---- configs (config/*.toml, comments dropped) ----
def strip(text):
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("##") and l.strip()) + "\n"
def uncomment(text):
    return "\n".join(re.sub(r"^# ", "", l) for l in text.splitlines() if not l.lstrip().startswith("##") and l.strip()) + "\n"
for p in ("sanigate.toml", "modbus.toml", "lorawan.toml", "jt808.toml", "nmea.toml", "demo/sanigate-demo.toml"):
    text = open(os.path.join(ROOT, "config", p)).read()
    text = re.sub(r"@PORT(\d)@", lambda m: str(1502 + int(m.group(1))), text).replace("@PROFILES@", "profiles")
    put("gateway_config", os.path.basename(p), strip(text))
put("gateway_config", "sanigate-all-keys.toml", uncomment(open(os.path.join(ROOT, "config", "sanigate.toml")).read()))
fleet = open(os.path.join(ROOT, "config", "sanifleet.toml")).read()
put("fleet_config", "sanifleet.toml", strip(fleet))
put("fleet_config", "sanifleet-all-keys.toml", uncomment(fleet))
put("fleet_config", "duration", "90s")

# ---- firmware manifests, signed with the fuzz target's key ----
KEY = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGroz96H79jp0B8tPdI8nI0oJvrv1I5HB3BdgwkYZR7J\n-----END PRIVATE KEY-----\n")
def signed(m):
    canon = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "k.pem"), "w").write(KEY)
        open(os.path.join(d, "m"), "wb").write(canon)
        sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", os.path.join(d, "k.pem"), "-in", os.path.join(d, "m")],
                             check=True, capture_output=True).stdout
        pub = subprocess.run(["openssl", "pkey", "-in", os.path.join(d, "k.pem"), "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout[-32:]
    import hashlib
    key_id = hashlib.sha256(pub).hexdigest()[:16]
    out = dict(m)
    out["signature"] = {"alg": "ed25519", "key_id": key_id, "sig": base64.b64encode(sig).decode()}
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
M = {"created": 1763712000000, "model": "GR-200", "notes": "fixes door sensor", "sha256": "5f" * 32, "size": 483328,
     "target": "modbus", "v": 1, "version": "1.4.2"}
if subprocess.run(["which", "openssl"], capture_output=True).returncode == 0:
    put("firmware_manifest", "modbus", signed(M))
    put("firmware_manifest", "gateway-cjk", signed(dict(M, target="gateway", model="网关-1", notes="修复\n门磁", version="v2.0.0-rc.1+b7")))
    put("firmware_manifest", "lorawan", signed(dict(M, target="lorawan")))
    put("firmware_manifest", "tampered", signed(M).replace("483328", "483329"))
put("firmware_manifest", "unknown-key", json.dumps(dict(M, signature={"alg": "ed25519", "key_id": "3a91c0d2e4b57f68", "sig": "A" * 86 + "=="})))
put("firmware_manifest", "extra-field", json.dumps(dict(M, force=True, v=2)))
put("firmware_manifest", "base64-chunk", "SGVsbG8sIHNhbmlnYXRlIQ==")

# ---- versions: three versions (or a range and two versions), one per line ----
for name, text in {"pre": "1.2.0\n1.2.0-rc1\nv1.2", "range": ">=1.2.0,<1.3.0\n1.2.5\n1.3.0-rc1",
                   "natural": "1.1.1w\n1.1.1\n1.02.10+b9", "any": "*\n0\nrc.1", "ops": " != 1.0 , <= 2.0-beta.2 ,>0.9\nrc10\nrc2"}.items():
    put("firmware_version", name, text)

# ---- rollout campaigns ----
SPEC = {"id": "fw-142", "target_type": "modbus", "model": "GR-200", "version": "2.1.0", "artifact_sha256": "ab" * 32,
        "target": {"kinds": ["room"], "sites": ["houpu"], "version_range": ">=1.0.0,<2.1.0"},
        "canary_count": 1, "waves_pct": [10, 50, 100], "success_threshold_pct": 90, "failure_limit_count": 3,
        "failure_limit_pct": 20, "failure_limit_min_devices": 4, "max_parallel_per_gateway": 2, "max_parallel_per_bus": 1,
        "device_timeout_s": 600, "retries": 1, "health_gate_s": 60, "blackout": ["06:00-09:00", "22:30-01:00"], "utc_offset": "+08:00"}
put("rollout_spec", "spec", json.dumps(SPEC))
put("rollout_spec", "spec-minimal", json.dumps({"id": "a", "target_type": "jt808", "model": "JT-1", "version": "2.0.0", "artifact_sha256": "0" * 64,
                                                "canary_count": 0, "utc_offset": "-03:30"}))

# ---- sanictl: model messages, heat maps, rollout answers ----
put("sanictl_tail", "telemetry", "sanigate/v1/houpu/devices/room-07/telemetry\n" + json.dumps(
    {"id": "gw-houpu-01:1842", "ts": 1763712005000, "device": "room-07", "kind": "room", "metrics": {"fill_level_pct": 81.5, "door_open": False},
     "quality": {"temperature_c": "out_of_range"}, "source": {"gateway": "gw-houpu-01", "protocol": "modbus", "profile": "garbage-room-v1"},
     "location": {"lat": 24.48, "lon": 118.1}}))
put("sanictl_tail", "event", "sanigate/v1/houpu/devices/bin-0412/event\n" + json.dumps(
    {"ts": 1763712005000, "device": "bin-0412", "event": "overflow", "state": "active", "severity": "critical", "metrics": {"fill_level_pct": 97}}))
put("sanictl_tail", "status", "sanigate/v1/houpu/devices/truck-3/status\n" + json.dumps({"ts": 1763712005000, "online": False, "last_seen": 1763711990000}))
put("sanictl_tail", "gateway", "sanigate/v1/houpu/gateway/gw-houpu-01/status\n" + json.dumps(
    {"ts": 1763712005000, "online": True, "version": "0.1.0", "started": 1763700000000, "outbox": {"pending": 12, "oldest_ts": 1763711000000},
     "adapters": {"modbus": {"state": "running", "per_device": {"room-07": {"requests": 100, "timeouts": 2}}}}}))
put("sanictl_tail", "fleet", "sanigate/v1/houpu/fleet/health/bin-0412\n" + json.dumps(
    {"device": "bin-0412", "site": "houpu", "kind": "bin", "state": "degraded", "since": 1763712000000, "ts": 1763712005000,
     "reasons": [{"code": "low_battery", "level": "degraded", "detail": "battery_pct 12 <= 20"}]}))
HM = {"v": 1, "site": "houpu", "layer": "bin_fill", "ts": 1763712005000, "grid": "geohash", "precision": 7, "crs": "wgs84",
      "fields": ["n", "sum", "min", "max", "first", "last"], "merge": ["add", "add", "min", "max", "min", "max"],
      "window": {"size_s": 3600, "start": 1763708400000, "end": 1763712000000},
      "cells": {"wsk52gh": [3, 212.5, 41.0, 96.5, 1763711000000, 1763712000000], "ws7gr2m": [1, 50, 50, 50, 1763711500000, 1763711500000],
                "wsk52gj": [0, 0, None, None, None, None]}}
put("sanictl_heatmap", "bin-fill-window", json.dumps(HM))
put("sanictl_heatmap", "unattended-state", json.dumps(dict(HM, layer="unattended", window=None, crs="gcj02",
    fields=["n", "sum", "min", "max", "first", "last", "waiting"], merge=["add", "add", "min", "max", "min", "max", "max"],
    cells={"wsk52": [2, 7200, 1800, 5400, 1763700000000, 1763710000000, 5400]})))
put("sanictl_heatmap", "coverage", json.dumps(dict(HM, layer="vehicle_coverage", precision=6,
    fields=["n", "sum", "min", "max", "first", "last", "passes", "dwell_s"], merge=["add", "add", "min", "max", "min", "max", "add", "add"],
    cells={"wsk52g": [40, 40, 1, 1, 1763700000000, 1763710000000, 3, 620.5], "s0": [1, 1, 1, 1, 0, 0, 1, 0]})))
STATUS = {"id": "fw-142", "state": "running", "reason": "", "target_type": "modbus", "model": "GR-200", "version": "2.1.0", "group": 1,
          "groups": [{"group": 0, "name": "canary", "total": 1, "succeeded": 1, "failed": 0},
                     {"group": 1, "name": "wave 1", "total": 4, "succeeded": 1, "failed": 1}],
          "total": 40, "counts": {"pending": 30, "deferred": 3, "updating": 2, "verifying": 1, "succeeded": 2, "failed": 2},
          "blackout_now": False, "created": 1763700000000, "updated": 1763711000000, "ts": 1763712005000,
          "devices": [{"key": "houpu/room-07", "gateway": "gw-houpu-01", "group": 1, "state": "failed", "attempts": 2, "reason": "timeout"},
                      {"key": "xinyuan/room-01", "gateway": "gw-x", "group": 1, "state": "updating", "attempts": 1}]}
put("sanictl_rollout", "status", json.dumps(STATUS))
put("sanictl_rollout", "list", json.dumps([STATUS, dict(STATUS, id="fw-9", state="paused", reason="wave 1 below 90 %")]))
put("sanictl_rollout", "create", json.dumps({"id": "fw-142", "state": "draft", "total": 40, "groups": [1, 4, 35]}))
put("sanictl_rollout", "firmware-list", json.dumps([{"sha256": "ab" * 32, "model": "GR-200", "version": "2.1.0", "target": "modbus",
                                                     "size": 483328, "created": 1763712000000, "key_id": "3a91c0d2e4b57f68", "notes": "门磁"},
                                                    {"sha256": "ac" * 32, "model": "JT-1", "version": "1.0", "target": "jt808", "size": 1}]))
put("sanictl_rollout", "chunk-limit", "a chunk may hold at most 65536 bytes")
put("sanictl_rollout", "waves", "10%, 50%, 100%")

# ---- device commands (gateway/app/command_payload.h and tests/unit/untrusted_input_test.cpp) ----
for name, text in {"args": '{"args":["set_interval", 600]}', "value": '{"value": true}', "timeout": '{"args":[600, true, "x"], "timeout_ms": 2500}',
                   "timeout-only": '{"timeout_ms": 2000}', "text": "set_interval 600", "string": '"open door"', "number": "42.5",
                   "bad-utf8": b'{"value":"\xff\xfe"}', "deep": "[" * 5 + "]" * 5, "nested-arg": '{"args":[[1]]}', "unknown-key": '{"arg":["on"]}',
                   "truncated": '{"args":["on"],', "too-many": '{"args":[' + ",".join(["1"] * 17) + "]}", "long-arg": '{"value":"' + "z" * 300 + '"}',
                   "both": '{"args":[1],"value":2}', "cjk": '{"args":["门磁 开"]}', "escapes": '{"args":["a\\u0000b", "\\n"]}'}.items():
    put("command_payload", name, text)

# ---- the firmware agent: install jobs (first byte even) and chunk answers (odd; bits 1-2: chunk size) ----
JOB_M = dict(M, sha256="5f" * 32, size=3000)
job_manifest = json.loads(signed(JOB_M)) if subprocess.run(["which", "openssl"], capture_output=True).returncode == 0 else JOB_M
JOB = {"campaign": "fw-1", "device": "room-1", "attempt": 1, "manifest": job_manifest, "chunks": "sanigate/v1/houpu/fleet/firmware/get"}
put("firmware_agent", "job", b"\x00" + json.dumps(JOB).encode())
put("firmware_agent", "job-wrong-types", b"\x00" + json.dumps(dict(JOB, device=7, attempt="1")).encode())
put("firmware_agent", "job-attempt-float", b"\x00" + json.dumps(dict(JOB, attempt=1e30)).encode())
put("firmware_agent", "job-no-manifest", b"\x00" + json.dumps({k: v for k, v in JOB.items() if k != "manifest"}).encode())
chunk = bytes(range(256)) * 4
put("firmware_agent", "chunk", b"\x05" + json.dumps({"ok": True, "result": {"offset": 1024, "size": 3000, "data": base64.b64encode(chunk).decode()}}).encode())
put("firmware_agent", "chunk-refused", b"\x05" + json.dumps({"ok": False, "code": "not_found", "error": "no stored image " + "5f" * 32}).encode())
put("firmware_agent", "chunk-no-result", b"\x03" + json.dumps({"ok": True}).encode())
put("firmware_agent", "chunk-wrong-types", b"\x03" + json.dumps({"ok": 1, "result": {"offset": "0", "data": 5}}).encode())
put("firmware_agent", "chunk-float-offset", b"\x01" + b'{"ok":true,"result":{"offset":1e300,"data":"AAAA"}}')

# ---- sanifleet's rollout service (see fuzz_rollout_service.cpp for the fixture these refer to) ----
# Byte 0: entry point (0 ServeChunk, 1 OnJobStatus, 2 OnInstallAnswer, 3 Admin), byte 1: device or
# verb, byte 2: minutes the clock moves; then the payload.
import hashlib
IMAGE = bytes(i * 7 % 251 for i in range(3000))
IMG_SHA = hashlib.sha256(IMAGE).hexdigest()
def rs(op, pick, payload, minutes=0):
    return bytes([op, pick, minutes]) + (payload.encode() if isinstance(payload, str) else payload)
put("rollout_service", "chunk", rs(0, 0, json.dumps({"sha256": IMG_SHA, "offset": 1024, "length": 1024})))
put("rollout_service", "chunk-last", rs(0, 0, json.dumps({"sha256": IMG_SHA, "offset": 2048})))
put("rollout_service", "chunk-float", rs(0, 0, json.dumps({"sha256": IMG_SHA, "offset": 1e30, "length": -5})))
put("rollout_service", "chunk-unknown", rs(0, 0, json.dumps({"sha256": "x" * 300})))
for name, st in {"succeeded": {"campaign": "fw-1", "attempt": 1, "state": "succeeded", "version": "2.1.0", "ts": 1767225605000},
                 "failed": {"campaign": "fw-1", "attempt": 1, "state": "failed", "error": "flash error"},
                 "downloading": {"campaign": "fw-1", "attempt": 1, "state": "downloading", "bytes": 1024, "total": 3000},
                 "wrong-types": {"campaign": "fw-1", "attempt": "1", "state": "failed", "error": 7, "ts": "now"},
                 "float-attempt": {"campaign": "fw-1", "attempt": 1.0, "state": "succeeded", "version": "2.0.9", "ts": 1e300}}.items():
    put("rollout_service", "status-" + name, rs(1, 0, json.dumps(st)))
put("rollout_service", "install-refused", rs(2, 0, "fw-1\x1fhoupu/room-1\x1f1\n" + json.dumps({"ok": False, "code": "invalid", "error": "unknown device room-1"})))
put("rollout_service", "install-accepted", rs(2, 0, "fw-1\x1fhoupu/room-1\x1f1\n" + json.dumps({"ok": True, "result": {"accepted": True}})))
put("rollout_service", "install-wrong-types", rs(2, 0, "fw-1\x1fhoupu/room-1\x1f1\n" + json.dumps({"ok": "yes", "error": ["x"]})))
VERBS = ["firmware_put", "firmware_list", "rollout_create", "rollout_start", "rollout_pause", "rollout_resume", "rollout_abort",
         "rollout_status", "rollout_list"]
def admin(verb, args):
    return rs(3, VERBS.index(verb), json.dumps(args))
put("rollout_service", "admin-list", admin("firmware_list", {}))
put("rollout_service", "admin-create", admin("rollout_create", {"id": "fw-3", "artifact_sha256": IMG_SHA, "canary_count": 1, "waves_pct": [100]}))
put("rollout_service", "admin-start", admin("rollout_start", {"id": "fw-2"}))
put("rollout_service", "admin-pause", admin("rollout_pause", {"id": "fw-1", "reason": "night"}))
put("rollout_service", "admin-abort", admin("rollout_abort", {"id": "fw-1"}))
put("rollout_service", "admin-status", admin("rollout_status", {"id": "fw-1", "devices": True}))
put("rollout_service", "admin-status-wrong-types", admin("rollout_status", {"id": "fw-1", "devices": "yes"}))
put("rollout_service", "admin-put-wrong-types", admin("firmware_put", {"sha256": 5, "offset": 0, "data": [], "last": "yes"}))
if subprocess.run(["which", "openssl"], capture_output=True).returncode == 0:
    FIX_M = {"created": 1767225600000, "model": "GR-200", "notes": "fuzz", "sha256": IMG_SHA, "size": 3000, "target": "modbus", "v": 1,
             "version": "2.1.0"}
    put("rollout_service", "admin-put", admin("firmware_put", {"sha256": IMG_SHA, "offset": 0, "manifest": json.loads(signed(FIX_M)),
                                                               "data": base64.b64encode(IMAGE[:1024]).decode(), "last": True}))

# ---- model messages sanifleet decodes (CONTRACT §3; byte 0: 0 telemetry, 1 event, 2 status) ----
MODEL = {
    "reading": (0, {"id": "gw-houpu-01:184467", "ts": 1763712000123, "device": "room-07", "kind": "garbage_room",
                    "source": {"protocol": "modbus", "gateway": "gw-houpu-01", "profile": "garbage-room-v1"},
                    "metrics": {"fill_level_pct": 81.5, "temperature_c": 26.1, "nh3_ppm": 3.2, "door_open": False},
                    "quality": {"nh3_ppm": "timeout"}, "location": {"lat": 24.5123, "lon": 118.1342}}),
    "uplink": (0, {"ts": 1763712000500, "kind": "bin", "source": {"protocol": "lorawan", "rssi_dbm": -97, "snr_db": 7.5,
                                                                  "fcnt": 4242, "frames_lost": 3}, "metrics": {"fill_level_pct": 40}}),
    "backfill": (0, {"ts": 1763700000000, "kind": "vehicle", "source": {"protocol": "jt808", "backfill": True},
                     "metrics": {"speed_kmh": 31.5}, "location": {"lat": 24.51, "lon": 118.13}}),
    "event": (1, {"id": "gw-houpu-01:184470", "ts": 1763712001000, "device": "bin-0412", "kind": "bin",
                  "event": "overflow", "state": "active", "severity": "warning", "metrics": {"fill_level_pct": 96}}),
    "status": (2, {"online": False, "last_seen": 1763712000000, "ts": 1763712009000}),
}
for name, (leaf, doc) in MODEL.items():
    put("model_message", name, bytes([leaf]) + json.dumps(doc).encode())

print("seeds written under", CORPUS)
