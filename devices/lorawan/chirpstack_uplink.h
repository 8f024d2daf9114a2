// ChirpStack v4 MQTT integration: the JSON uplink event (`application/{app}/device/{dev_eui}/
// event/up`, protobuf-JSON field names) reduced to what the edge pipeline needs. ChirpStack has
// already checked the MIC, the frame counter and de-duplicated the copies, and decrypted the
// payload (`data`, base64). Pure function: bytes in, an uplink or a precise error out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "lorawan/lorawan_crypto.h"

namespace sanigate::dev::lorawan {

struct ChirpstackUplink {
  uint64_t dev_eui = 0;
  std::string deduplication_id;
  std::optional<int64_t> time_ms;  // "time" (RFC 3339), when ChirpStack received it
  uint32_t fcnt = 0;
  uint8_t fport = 0;
  bool confirmed = false;
  Bytes data;                      // decrypted FRMPayload
  std::optional<double> rssi_dbm, snr_db;  // best copy among rxInfo
  std::string gateway_id;          // the concentrator of the best copy
  int concentrators = 0;           // rxInfo entries
  std::optional<int64_t> frequency_hz;
  std::string data_rate;           // "SF7BW125" from txInfo, or "DR3" from dr
};

// `topic_dev_eui` is the DevEUI level of the topic, used when the payload lacks deviceInfo.
Result<ChirpstackUplink> ParseChirpstackUplink(std::string_view json, std::string_view topic_dev_eui = {});

// Parses an RFC 3339 time ("2026-12-03T10:00:00.123456789+00:00" or "...Z") to Unix ms.
std::optional<int64_t> ParseRfc3339Ms(std::string_view text);

}  // namespace sanigate::dev::lorawan
