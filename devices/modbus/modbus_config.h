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
  int decimals = 6;                // rounding of the scaled value (sensor noise, float artefacts)
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

struct DeviceConfig {
  std::string id;
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
