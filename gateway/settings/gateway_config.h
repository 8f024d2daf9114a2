// The sanigate configuration: the [gateway], [mqtt] and [outbox] sections parsed here, and one
// section per compiled-in protocol parsed by that protocol's AdapterSpec (passed in by the app,
// so settings never depends on devices). Plain values after loading: thread-safe to read.
#pragma once

#include <any>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "settings/reader.h"

namespace sanigate::settings {

struct GatewaySection {
  std::string id;                     // gateway id, in topics and record ids
  std::string site;                   // site id, in topics
  std::string data_dir = "/var/lib/sanigate";
  std::string topic_prefix = "sanigate/v1";
  std::string log_level = "info";
  int64_t status_interval_s = 30;     // how often the retained gateway status is refreshed
  int64_t shutdown_drain_ms = 3000;   // SIGTERM: time to publish what is queued before exiting
};

struct TlsSection {
  bool enabled = false;
  std::string ca_file;    // trust store; empty = system default CAs
  std::string cert_file;  // client certificate for mutual TLS (optional)
  std::string key_file;
  bool verify_peer = true;  // check the broker's certificate and host name
};

struct MqttSection {
  std::string url = "tcp://127.0.0.1:1883";  // tcp:// or ssl:// (mqtts:// accepted)
  std::string client_id;                     // default: "sanigate-" + gateway id
  std::string username;
  std::string password;  // from `password` or `password_file` (0600); never logged
  int64_t keepalive_s = 30;
  int64_t connect_timeout_s = 10;
  // Publishes unacknowledged this long with nothing heard from the broker: the link is given up
  // and connected again (a silent partition noticed before the keep-alive does). 0: off.
  int64_t ack_timeout_s = 20;
  // QoS 1 messages awaiting PUBACK at once. Must not exceed the broker's Receive Maximum
  // (Mosquitto: max_inflight_messages, 20 by default), or the broker stalls the excess.
  int64_t inflight_window = 20;
  int64_t reconnect_min_ms = 500;
  int64_t reconnect_max_ms = 5000;  // a restarted broker is found again within 5 s
  TlsSection tls;
};

struct OutboxSection {
  std::string path = "outbox.db";   // relative to gateway.data_dir
  int64_t max_rows = 2'000'000;
  int64_t max_mb = 512;
  int64_t max_age_h = 168;          // telemetry and status older than this are shed
  int64_t commit_max_rows = 1000;   // rows per transaction at most
  int64_t commit_linger_ms = 20;    // wait to gather a bigger batch: fewer fsyncs, less flash wear
  std::string synchronous = "full"; // "full": survives power loss; "normal": survives crashes
};

// [[upstream]]: a broker the box delivers to beside the local one (the city platform). Records go
// up from the outbox with a cursor of their own (CONTRACT §5), and so do sanifleet's outputs.
struct UpstreamSection {
  std::string name;  // [a-z0-9._-]+, stable: the destination's backlog is kept under it
  MqttSection mqtt;  // url, client_id, credentials, tls, keepalive_s, window, reconnect
  // Replaces gateway.topic_prefix in every topic sent up, e.g. "city/xm/huli"; default: the same.
  std::string topic_prefix;
  // What goes up: kinds (telemetry, event, status, fleet, heatmap, gateway) and MQTT topic
  // filters over the local topics (include: empty = all; exclude wins).
  std::vector<std::string> kinds;
  std::vector<std::string> include, exclude;
  int64_t max_backlog_rows = 0;  // this destination's own bound; 0 = the outbox's bounds
  double max_msgs_per_s = 0;     // rate cap for a link that costs money; 0 = none
  int64_t max_kib_s = 0;         // bandwidth cap (topic + payload); 0 = none
  // Batching of small records into one publish (upstream/batch.h); off when <= 1.
  int64_t batch_max_records = 0;
  int64_t batch_max_kib = 64;
  std::string compression = "none";  // of batches: none | deflate | zstd
  // Down-link, off when empty: filters over the local scheme of the commands and admin requests
  // the city may send (device commands, gateway admin verbs), subscribed under topic_prefix.
  std::vector<std::string> downlink;
  int64_t max_age_h = 0;         // telemetry and status older than this are shed for it; 0 = outbox's
};

inline const std::vector<std::string>& UpstreamKinds() {
  static const std::vector<std::string> kinds = {"telemetry", "event", "status", "fleet", "heatmap", "gateway"};
  return kinds;
}

struct AdapterSection {
  std::string protocol;  // section name, e.g. "modbus"
  std::any config;       // the protocol's own parsed config
};

// [firmware]: what the gateway needs to install images sent by a rollout (fleet/README.md).
struct FirmwareSection {
  std::vector<std::string> trusted_keys;  // operators' Ed25519 public keys (PEM); none = refuse all
  std::string cache_dir = "firmware";     // relative to data_dir
  int64_t chunk_kib = 64;                 // per pull request
  int64_t window = 4;                     // pull requests in flight
  int64_t max_kib_s = 512;                // so a rollout never starves telemetry
  int64_t request_timeout_ms = 10'000;    // a chunk not answered by then is asked again
  int64_t job_timeout_s = 3600;           // for the device's own install after the download
  // Self-update of the box (target "gateway"): shell commands run with SANIGATE_IMAGE,
  // SANIGATE_VERSION and SANIGATE_SHA256 set. Install, then sanigate restarts into the new
  // image; after the restart it must be healthy (broker connected, no adapter failed, the
  // version file saying the new version, self_check_command passing) within self_health_s,
  // or self_rollback_command restores the previous version and sanigate restarts again.
  std::string self_install_command, self_rollback_command, self_check_command;
  std::string version_file;  // the installed version of the box; empty: sanigate's own version
  int64_t self_health_s = 60;
};

// [metrics]: the Prometheus text endpoint (service/metrics_http.h), shared by both daemons.
struct MetricsSection {
  std::string listen;         // "127.0.0.1:9187" or "[::1]:9187"; empty = no endpoint
  std::string host;           // from listen: the IP literal
  uint16_t port = 0;          // from listen
  bool allow_remote = false;  // a non-loopback listen address is refused without it
  bool per_device = true;     // sanigate: the sanigate_device_* series (one set per device)
};

struct Config {
  std::string file;
  GatewaySection gateway;
  MqttSection mqtt;
  OutboxSection outbox;
  FirmwareSection firmware;
  MetricsSection metrics;
  std::vector<UpstreamSection> upstreams;
  std::vector<AdapterSection> adapters;
  std::vector<std::string> warnings;  // legal but suspicious settings, FILE:LINE:COL: ...

  std::string OutboxPath() const;
  std::string FirmwareDir() const;
};

// A protocol section parser: reads its [name] table, reports problems into the node's errors.
struct SectionParser {
  std::string name;
  std::function<std::any(Node&, const GatewaySection&)> parse;
};

// An [mqtt] table (url, client_id, credentials, tls, reconnect), shared by every daemon and the CLI.
void ParseMqttSection(Node& n, MqttSection& m, const std::string& default_client_id);
// A [metrics] table: listen, allow_remote and (when `with_per_device`) per_device.
void ParseMetricsSection(Node& n, MetricsSection& m, bool with_per_device);
// "HOST:PORT" with an IPv4 literal or a bracketed IPv6 one and a port 1..65535; false if not.
bool SplitListenAddress(std::string_view listen, std::string& host, uint16_t& port);
// 127.0.0.0/8 or ::1 (an IP literal); false for anything else, names included.
bool IsLoopbackAddress(const std::string& host);
// `topic_prefix`: no wildcards, no leading or trailing slash.
std::string ReadTopicPrefix(Node& n, const std::string& def);
// The first line of a secret file, which must not be readable by group or others (0600).
std::string ReadSecretFile(Node& n, std::string_view key, const std::string& path);

// Where device profiles are looked for, in order: `profiles_dir` when the section sets it, else
// profiles/ beside the config file (the operator's /etc/sanigate/profiles) and then the
// package's /usr/share/sanigate/profiles, so an operator's copy overrides the packaged one.
std::vector<std::string> ProfileDirs(Node& section);
inline constexpr const char* kPackagedProfilesDir = "/usr/share/sanigate/profiles";
// The first `{dir}/{name}.toml` that exists, or empty.
std::string FindProfile(const std::vector<std::string>& dirs, const std::string& name);
// "a.toml or b.toml": where FindProfile looked, for error messages.
std::string ProfilePlaces(const std::vector<std::string>& dirs, const std::string& name);

// Loads and checks a config file. On any problem returns kInvalid with every error, one per
// line, "FILE:LINE:COL: key.path: problem".
Result<Config> LoadConfig(const std::string& path, const std::vector<SectionParser>& sections);
Result<Config> LoadConfigString(std::string_view text, const std::string& name,
                                const std::vector<SectionParser>& sections);

}  // namespace sanigate::settings
