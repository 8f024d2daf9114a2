// Configuration of the Modbus TCP adapter ([modbus] section): devices, their points (register or
// bit -> metric), polling and fault settings. Parsed strictly through settings::Node.
// Plain values: thread-safe to copy.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/device_rules.h"
#include "core/record.h"
#include "modbus/value_codec.h"
#include "settings/gateway_config.h"
#include "settings/reader.h"

namespace sanigate::dev::modbus {

struct PointConfig {
  std::string metric;  // snake_case with unit: fill_level_pct
  Table table = Table::kHolding;
  uint16_t address = 0;
  ValueType type = ValueType::kU16;
  WordOrder word_order = WordOrder::kHighFirst;
  ByteOrder byte_order = ByteOrder::kBig;
  uint16_t length = 1;  // registers of a string
  uint8_t bit = 0;      // bit of the register for type "bit"
  double scale = 1.0;
  double offset = 0.0;
  std::optional<double> min, max;  // raw-after-scaling valid range; outside is flagged, not published
  // Rounding of the scaled value (sensor noise, float artefacts). Unset: integers to 6 decimals,
  // floats to their own precision (a float32 23.19 is published as 23.19, not 23.190001).
  std::optional<int> decimals;
  MetricRule rule;

  Encoding encoding() const { return Encoding{type, word_order, byte_order, length, bit}; }
  size_t registers() const { return RegisterCount(encoding()); }
};

// A write the device accepts through `.../devices/{id}/cmd/{name}`.
struct CommandConfig {
  std::string name;  // [a-z][a-z0-9_]*: uv_lamp, deodorizer, lid
  Table table = Table::kCoil;  // coil or holding
  uint16_t address = 0;
  ValueType type = ValueType::kBool;  // bool for coils; u16/i16/u32/i32/f32 for registers
  WordOrder word_order = WordOrder::kHighFirst;
  ByteOrder byte_order = ByteOrder::kBig;
  double scale = 1.0, offset = 0.0;  // raw = (value - offset) / scale
  std::optional<double> min, max;    // allowed values, in engineering units
  std::vector<std::pair<std::string, double>> values;  // named arguments: on = 1, off = 0
  bool verify = false;  // read back after writing and compare
  int64_t timeout_ms = 2000;  // from the request until the write is done

  Encoding encoding() const { return Encoding{type, word_order, byte_order, 1, 0}; }
};

// The holding-register window of a device's bootloader, through which the gateway installs
// firmware ([firmware] in a profile or a device entry; devices/modbus/README.md describes the
// protocol). Addresses are holding registers; u32 values span two registers.
struct FirmwareConfig {
  uint16_t control = 0;       // u16 command: 1 begin (size first), 2 commit, 3 reboot, 4 abort
  uint16_t status = 0;        // u16: 0 idle, 1 receiving, 2 verifying, 3 ready, 4 error
  std::optional<uint16_t> error;  // u16 error code while status is 4
  uint16_t size = 0;          // u32: bytes of the whole image, written before "begin"
  uint16_t offset = 0;        // u32: byte offset of the chunk being written
  uint16_t chunk_length = 0;  // u16: bytes in the chunk being written
  uint16_t data = 0;          // first register of the data window
  uint16_t max_chunk = 120;   // registers of the data window (2 bytes each), at most 120
  uint16_t checksum = 0;      // u32: CRC-32 (IEEE) of the whole image, written before "commit"
  uint16_t version = 0;       // string: the version the device runs, read back after reboot
  uint16_t version_length = 8;  // registers of the version string
  WordOrder word_order = WordOrder::kHighFirst;  // of the u32 values
  ByteOrder byte_order = ByteOrder::kBig;        // of the image bytes and version characters
  std::string model;          // if set, images for another model are refused
  int64_t reboot_time_ms = 10'000;    // how long the device is silent after "reboot"
  int64_t verify_timeout_ms = 30'000; // from "commit" until the status is ready or error
  int chunk_retries = 3;      // extra tries of a chunk the device did not answer
  std::vector<std::pair<int, std::string>> errors;  // error code -> text (besides the defaults)
};

struct DeviceConfig {
  std::string id;
  std::string profile;  // the profile it was declared from, if any
  std::string kind = "garbage_room";
  std::string host;
  uint16_t port = 502;
  int unit_id = 1;
  int64_t interval_ms = 1000;
  int64_t timeout_ms = 500;
  int offline_after = 3;  // consecutive failed polls before the device is marked offline
  std::optional<Location> location;
  std::optional<OverflowRule> overflow;
  std::optional<FillRule> fill;
  std::vector<EventRule> events;
  std::vector<PointConfig> points;
  std::vector<CommandConfig> commands;
  std::optional<FirmwareConfig> firmware;
};

// One RS-485 line: a serial port and the RTU devices on it, polled by one worker with exactly
// one request in flight.
struct BusConfig {
  std::string name;
  std::string port;  // e.g. /dev/ttyUSB0 (a stable /dev/serial/by-id/... path survives replugs)
  int baud = 9600;
  char parity = 'E';  // 'N', 'E' or 'O'
  int data_bits = 8;
  int stop_bits = 1;
  bool rs485 = false;  // switch the port to RS-485 mode (TIOCSRS485) where the driver has it
  // After a timeout or a wrong answer the line must stay quiet this long (on top of t3.5)
  // before the next request, so a slave answering late never lands in another's turn.
  int64_t guard_ms = 50;
  std::vector<DeviceConfig> devices;

  // The 3.5-character silence between frames (fixed 1.75 ms above 19200 baud).
  std::chrono::microseconds FrameGap() const;
};

struct ModbusConfig {
  int workers = 4;  // TCP devices polled in parallel (libmodbus is blocking)
  int64_t max_gap = 8;  // registers that may be read over to merge two blocks
  int64_t max_registers = 125;  // per read request (FC03/FC04), for devices with smaller buffers
  int64_t max_bits = 2000;      // per read request (FC01/FC02)
  std::vector<DeviceConfig> devices;  // Modbus TCP
  std::vector<BusConfig> buses;       // Modbus RTU
};

// Parses the [modbus] section; problems go to node.errors(). Returns a ModbusConfig in std::any.
std::any ParseModbusSection(settings::Node& node, const settings::GatewaySection& gateway);

}  // namespace sanigate::dev::modbus
