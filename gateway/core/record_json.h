// JSON encoding of Records exactly as CONTRACT §3 (readings, events, device status) and the MQTT
// topic each one goes to. Pure functions: thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "core/record.h"

namespace sanigate {

struct EncodeContext {
  std::string gateway;  // source.gateway and the id prefix
  std::string site;
  std::string topic_prefix = "sanigate/v1";
};

// The record id: "{gateway}:{seq}", unique and stable because seq comes from the outbox.
std::string RecordId(const std::string& gateway, uint64_t seq);
std::string EncodeRecord(const Record& r, const EncodeContext& ctx, uint64_t seq);
std::string RecordTopic(const Record& r, const EncodeContext& ctx);

}  // namespace sanigate
