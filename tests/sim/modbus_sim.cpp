// modbus_sim: a Modbus TCP / RTU device simulator of a "garbage room controller".
//
// TCP mode: a real Modbus TCP server built on libmodbus. One process simulates
// N independent devices, each with its own listening socket and register map.
// RTU mode (--rtu PATH): one serial line (a tty, usually one side of a
// PtyBridge) with several slave ids, each an independent device with its own
// register map. Single-threaded: everything is served from one ppoll() loop.
// Every device also has a bootloader in holding registers 4096..4255 (the
// [firmware] window of config/profiles/garbage-room-v1.toml; the protocol is
// described in devices/modbus/README.md), with --fw-* failure modes.
// See README.md in this folder for the register map and the command line.

#include <modbus/modbus.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <array>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr int kTableSize = 100;           // addresses 0..99 in every table
constexpr std::size_t kMaxClientsPerDevice = 256;
constexpr int kListenBacklog = 128;
constexpr std::uint32_t kByteTimeoutUs = 100000;  // 100 ms
constexpr std::uint32_t kFlushSleepUs = 5000;     // 5 ms
constexpr int kMaxSlaveId = 247;                  // RTU unit ids 1..247, 0 = broadcast
constexpr auto kReopenInterval = std::chrono::milliseconds(200);
// RTU: a partial request with no new byte for this long is discarded (resync).
constexpr auto kRtuStallTimeout = std::chrono::milliseconds(100);

// The bootloader's holding registers: the [firmware] window of
// config/profiles/garbage-room-v1.toml (protocol: devices/modbus/README.md).
constexpr int kFwBase = 4096;            // first register of the window
constexpr int kFwRegs = 160;             // 4096..4255
constexpr int kFwControl = 4096;         // u16 command: 1 begin, 2 commit, 3 reboot, 4 abort
constexpr int kFwStatus = 4097;          // u16: 0 idle, 1 receiving, 2 verifying, 3 ready, 4 error
constexpr int kFwError = 4098;           // u16 error code while status is 4
constexpr int kFwSize = 4100;            // u32 image size
constexpr int kFwOffset = 4102;          // u32 offset of the chunk
constexpr int kFwChunkLen = 4104;        // u16 bytes in the chunk
constexpr int kFwData = 4105;            // data window, kFwMaxChunk registers
constexpr int kFwMaxChunk = 120;
constexpr int kFwChecksum = 4230;        // u32 CRC-32 of the image
constexpr int kFwVersion = 4240;         // string, kFwVersionLen registers
constexpr int kFwVersionLen = 8;
constexpr std::uint32_t kFwMaxImage = 16u << 20;
enum FwStatus { kFwIdle = 0, kFwReceiving = 1, kFwVerifying = 2, kFwReady = 3, kFwFailed = 4 };
enum FwError { kFwErrChecksum = 1, kFwErrOrder = 2, kFwErrTooLarge = 3, kFwErrIncomplete = 4, kFwErrState = 5 };

// ---------------------------------------------------------------------------
// Signals: handlers only set flags. The signals are blocked except while the
// main loop sits in ppoll(), which makes their handling race-free and prompt.

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_mute = 0;

extern "C" void on_signal(int sig) {
    switch (sig) {
    case SIGUSR1: g_mute = 1; break;
    case SIGUSR2: g_mute = 0; break;
    default: g_stop = 1; break;
    }
}

// ---------------------------------------------------------------------------
// Command line

enum class Table { Coil, DiscreteInput, Holding, Input };

enum class SetKind { Raw, F32, I32, U32 };

struct SetOp {
    SetKind kind;
    Table table;
    int addr;
    std::int64_t ivalue;  // Raw, I32, U32
    float fvalue;         // F32
};

struct CounterSpec {
    Table table;  // Holding or Input
    int addr;     // high word; low word at addr + 1
};

struct Options {
    int devices = 1;
    int port = 0;
    std::string host = "127.0.0.1";
    std::string port_file;
    // RTU mode (rtu_path non-empty)
    std::string rtu_path;
    int baud = 9600;
    char parity = 'E';
    int data_bits = 8;
    int stop_bits = 1;
    std::vector<int> slaves{1};  // sorted, unique
    std::vector<int> mute_slaves;
    int turnaround_ms = 5;
    std::vector<int> late_slaves;  // answer after late_ms instead of turnaround_ms
    int late_ms = 0;
    std::vector<SetOp> sets;
    std::vector<CounterSpec> counters;
    bool dynamic = false;
    bool verbose = false;
    std::uint32_t seed = 42;
    // Fault injection on read requests (FC 1-4) outside the firmware window, in percent.
    double fault_timeout_pct = 0.0;
    double fault_exception_pct = 0.0;
    std::string stats_file;
    // Bootloader (firmware window)
    std::string fw_version = "1.0.0";  // what the device runs at start
    std::string fw_new_version;        // after an install of an image without an SGFW header
    enum class FwFail { None, Crc, OldVersion, Silent } fw_fail = FwFail::None;
    int fw_fail_after = 3;    // --fw-fail silent: chunks taken before going silent
    int fw_reboot_ms = 3000;  // silent after the reboot command
    int fw_verify_ms = 200;   // "verifying" after the commit
    int fw_busy_ms = 0;       // answers "busy" in the window for this long after each chunk
    bool fw_low_word_first = false;
    bool fw_little_bytes = false;
};

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "modbus_sim: %s\n", msg.c_str());
    std::fprintf(stderr, "Try 'modbus_sim --help' for usage.\n");
    std::exit(2);
}

void print_help() {
    std::printf(
        "Usage: modbus_sim [options]\n"
        "Modbus TCP / RTU simulator of a garbage room controller (libmodbus).\n"
        "\n"
        "TCP mode (default):\n"
        "  --devices N               number of independent devices (default 1)\n"
        "  --port P                  port of device 0, device i uses P+i;\n"
        "                            0 (default) = kernel-chosen ports\n"
        "  --host H                  IPv4 address to listen on (default 127.0.0.1)\n"
        "  --port-file FILE          write the ports, one per line, to FILE\n"
        "                            (via FILE.tmp + rename) once listening\n"
        "RTU mode (one serial line, several slave ids):\n"
        "  --rtu PATH                serve the tty PATH (reopened every 200 ms\n"
        "                            after an I/O error or hangup)\n"
        "  --baud N                  baud rate (default 9600)\n"
        "  --parity N|E|O            parity (default E)\n"
        "  --data-bits 7|8           data bits (default 8)\n"
        "  --stop-bits 1|2           stop bits (default 1)\n"
        "  --slaves LIST             unit ids served, e.g. 1-10,17 (default 1)\n"
        "  --mute-slaves LIST        unit ids that never answer (default none)\n"
        "  --turnaround-ms N         delay before each answer (default 5)\n"
        "  --late-slaves LIST        unit ids that answer every request only\n"
        "                            --late-ms after it arrived (default none)\n"
        "  --late-ms N               delay of the --late-slaves' answers,\n"
        "                            0..10000 (default 0)\n"
        "Both modes:\n"
        "  --set TABLE:ADDR=VALUE    TABLE: hr|ir|coil|di; hr/ir -32768..65535,\n"
        "                            coil/di 0|1 (repeatable)\n"
        "  --set-f32 TABLE:ADDR=F    float32, ABCD word order (hr|ir)\n"
        "  --set-i32 TABLE:ADDR=I    int32, high word first (hr|ir)\n"
        "  --set-u32 TABLE:ADDR=U    uint32, high word first (hr|ir)\n"
        "  --counter TABLE:ADDR      u32 at ADDR,ADDR+1 (hr|ir) incremented by\n"
        "                            each served read covering ADDR (repeatable)\n"
        "  --dynamic                 evolve fill level/temperature/nh3/door each second\n"
        "  --seed S                  base random seed for --dynamic and the\n"
        "                            --fault-* draws (default 42)\n"
        "  --verbose                 log every request to stderr\n"
        "Fault injection (read requests FC 1-4, never the firmware window or writes):\n"
        "  --fault-timeout-pct P     leave P %% (0..100, e.g. 2.5) of the reads\n"
        "                            unanswered, as if lost (default 0)\n"
        "  --fault-exception-pct P   answer P %% of the reads that are not lost with\n"
        "                            exception 02, illegal data address (default 0)\n"
        "  --stats-file FILE         at exit, write per-device statistics as JSON\n"
        "                            lines to FILE (via FILE.tmp + rename); they\n"
        "                            always go to stderr too\n"
        "Bootloader (holding registers 4096..4255, see devices/modbus/README.md):\n"
        "  --fw-version V            firmware version the devices start with (1.0.0)\n"
        "  --fw-new-version V        version after installing an image that has no\n"
        "                            \"SGFW\" V NUL header (default: \"unknown\")\n"
        "  --fw-fail MODE            crc: refuse every image (checksum error);\n"
        "                            old-version: reboot into the old version;\n"
        "                            silent: stop answering after --fw-fail-after chunks\n"
        "  --fw-fail-after N         chunks before --fw-fail silent (default 3)\n"
        "  --fw-reboot-ms N          silent time after the reboot command (3000)\n"
        "  --fw-verify-ms N          time in \"verifying\" after the commit (200)\n"
        "  --fw-busy-ms N            answer \"busy\" in the window for N ms after\n"
        "                            each chunk, as while writing flash (0)\n"
        "  --fw-word-order high|low  word order of the u32 registers (high)\n"
        "  --fw-byte-order big|little  byte order of data and version (big)\n"
        "  --help                    this text\n"
        "\n"
        "Signals: SIGUSR1 mute (read requests, never reply), SIGUSR2 unmute,\n"
        "SIGTERM/SIGINT exit 0.\n"
        "The TCP-only options and the RTU-only options cannot be mixed.\n");
}

// Parses a whole string as a signed integer (decimal, or hex with 0x prefix).
std::optional<std::int64_t> parse_int(std::string_view s) {
    if (s.empty()) return std::nullopt;
    std::string str(s);
    const char* p = str.c_str();
    bool neg = false;
    std::size_t skip = 0;
    if (p[0] == '-' || p[0] == '+') {
        neg = p[0] == '-';
        skip = 1;
    }
    int base = 10;
    if (str.size() > skip + 2 && p[skip] == '0' && (p[skip + 1] == 'x' || p[skip + 1] == 'X')) {
        base = 16;
        skip += 2;
    }
    if (skip >= str.size() || !std::isxdigit(static_cast<unsigned char>(p[skip]))) return std::nullopt;
    errno = 0;
    char* end = nullptr;
    unsigned long long mag = std::strtoull(p + skip, &end, base);
    if (errno != 0 || end == p + skip || *end != '\0') return std::nullopt;
    if (mag > (1ULL << 40)) return std::nullopt;  // far beyond anything we accept
    auto v = static_cast<std::int64_t>(mag);
    return neg ? -v : v;
}

std::optional<float> parse_float(std::string_view s) {
    if (s.empty()) return std::nullopt;
    std::string str(s);
    errno = 0;
    char* end = nullptr;
    float f = std::strtof(str.c_str(), &end);
    if (errno == ERANGE || end == str.c_str() || *end != '\0') return std::nullopt;
    return f;
}

// A percentage 0..100, decimals allowed ("2.5").
std::optional<double> parse_pct(std::string_view s) {
    if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '.')) return std::nullopt;
    std::string str(s);
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(str.c_str(), &end);
    if (errno != 0 || end == str.c_str() || *end != '\0' || !std::isfinite(v) || v < 0.0 || v > 100.0)
        return std::nullopt;
    return v;
}

std::optional<Table> parse_table(std::string_view s) {
    if (s == "hr") return Table::Holding;
    if (s == "ir") return Table::Input;
    if (s == "coil") return Table::Coil;
    if (s == "di") return Table::DiscreteInput;
    return std::nullopt;
}

// Parses "TABLE:ADDR"; 'width' registers/bits starting at ADDR must fit.
std::pair<Table, int> parse_table_addr(std::string_view s, int width, const std::string& flag) {
    auto colon = s.find(':');
    if (colon == std::string_view::npos) usage_error(flag + ": expected TABLE:ADDR, got '" + std::string(s) + "'");
    auto table = parse_table(s.substr(0, colon));
    if (!table) usage_error(flag + ": unknown table '" + std::string(s.substr(0, colon)) + "' (use hr, ir, coil or di)");
    auto addr = parse_int(s.substr(colon + 1));
    if (!addr || *addr < 0 || *addr + width > kTableSize)
        usage_error(flag + ": address '" + std::string(s.substr(colon + 1)) + "' out of range 0.." +
                    std::to_string(kTableSize - width));
    return {*table, static_cast<int>(*addr)};
}

SetOp parse_set(std::string_view arg, SetKind kind, const std::string& flag) {
    auto eq = arg.find('=');
    if (eq == std::string_view::npos) usage_error(flag + ": expected TABLE:ADDR=VALUE, got '" + std::string(arg) + "'");
    const int width = kind == SetKind::Raw ? 1 : 2;
    auto [table, addr] = parse_table_addr(arg.substr(0, eq), width, flag);
    std::string_view val = arg.substr(eq + 1);
    SetOp op{kind, table, addr, 0, 0.0f};
    const bool is_reg = table == Table::Holding || table == Table::Input;
    if (kind != SetKind::Raw && !is_reg) usage_error(flag + ": 32-bit values need table hr or ir");
    switch (kind) {
    case SetKind::Raw: {
        auto v = parse_int(val);
        if (is_reg) {
            if (!v || *v < -32768 || *v > 65535) usage_error(flag + ": value '" + std::string(val) + "' not in -32768..65535");
        } else if (!v || (*v != 0 && *v != 1)) {
            usage_error(flag + ": value '" + std::string(val) + "' must be 0 or 1");
        }
        op.ivalue = *v;
        break;
    }
    case SetKind::I32: {
        auto v = parse_int(val);
        if (!v || *v < INT32_MIN || *v > INT32_MAX) usage_error(flag + ": value '" + std::string(val) + "' not an int32");
        op.ivalue = *v;
        break;
    }
    case SetKind::U32: {
        auto v = parse_int(val);
        if (!v || *v < 0 || *v > static_cast<std::int64_t>(UINT32_MAX))
            usage_error(flag + ": value '" + std::string(val) + "' not a uint32");
        op.ivalue = *v;
        break;
    }
    case SetKind::F32: {
        auto f = parse_float(val);
        if (!f) usage_error(flag + ": value '" + std::string(val) + "' not a float");
        op.fvalue = *f;
        break;
    }
    }
    return op;
}

// Parses "1-10,17" into sorted unique unit ids within 1..kMaxSlaveId.
std::vector<int> parse_id_list(std::string_view s, const std::string& flag) {
    std::vector<int> ids;
    auto bad = [&](std::string_view item, const std::string& why) {
        usage_error(flag + ": '" + std::string(item) + "' " + why + " (expected ids 1.." +
                    std::to_string(kMaxSlaveId) + " and ranges, e.g. 1-10,17)");
    };
    if (s.empty()) bad(s, "is empty");
    std::size_t pos = 0;
    while (pos <= s.size()) {
        std::size_t comma = s.find(',', pos);
        if (comma == std::string_view::npos) comma = s.size();
        std::string_view item = s.substr(pos, comma - pos);
        std::size_t dash = item.find('-');
        auto lo = parse_int(item.substr(0, dash));
        auto hi = dash == std::string_view::npos ? lo : parse_int(item.substr(dash + 1));
        if (!lo || !hi) bad(item, "is not an id or a range");
        if (*lo < 1 || *hi > kMaxSlaveId) bad(item, "is out of range");
        if (*lo > *hi) bad(item, "is an empty range");
        for (auto id = *lo; id <= *hi; ++id) ids.push_back(static_cast<int>(id));
        pos = comma + 1;
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

// "1-3,7" for a sorted id list.
std::string format_id_list(const std::vector<int>& ids) {
    std::string out;
    for (std::size_t i = 0; i < ids.size();) {
        std::size_t j = i;
        while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
        if (!out.empty()) out.push_back(',');
        out += std::to_string(ids[i]);
        if (j > i) out += "-" + std::to_string(ids[j]);
        i = j + 1;
    }
    return out.empty() ? "none" : out;
}

bool standard_baud(std::int64_t b) {
    static constexpr std::array<std::int64_t, 24> kRates = {
        110, 300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400,
        460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
        3000000, 3500000, 4000000};
    return std::find(kRates.begin(), kRates.end(), b) != kRates.end();
}

Options parse_args(int argc, char** argv) {
    Options o;
    std::vector<std::string> tcp_flags;  // given TCP-only flags, to reject them with --rtu
    std::vector<std::string> rtu_flags;  // given RTU-only flags, to reject them without --rtu
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string flag = arg;
        std::optional<std::string> inline_value;
        if (arg.rfind("--", 0) == 0) {
            auto eq = arg.find('=');
            if (eq != std::string::npos) {
                flag = arg.substr(0, eq);
                inline_value = arg.substr(eq + 1);
            }
        }
        auto value = [&]() -> std::string {
            if (inline_value) return *inline_value;
            if (i + 1 >= argc) usage_error(flag + ": missing value");
            return argv[++i];
        };
        auto no_value = [&]() {
            if (inline_value) usage_error(flag + ": takes no value");
        };

        if (flag == "--help" || flag == "-h") {
            print_help();
            std::exit(0);
        } else if (flag == "--devices") {
            tcp_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || *v < 1 || *v > 65535) usage_error("--devices: expected an integer >= 1");
            o.devices = static_cast<int>(*v);
        } else if (flag == "--port") {
            tcp_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || *v < 0 || *v > 65535) usage_error("--port: expected 0..65535");
            o.port = static_cast<int>(*v);
        } else if (flag == "--host") {
            tcp_flags.push_back(flag);
            o.host = value();
        } else if (flag == "--port-file") {
            tcp_flags.push_back(flag);
            o.port_file = value();
            if (o.port_file.empty()) usage_error("--port-file: empty file name");
        } else if (flag == "--set") {
            o.sets.push_back(parse_set(value(), SetKind::Raw, flag));
        } else if (flag == "--set-f32") {
            o.sets.push_back(parse_set(value(), SetKind::F32, flag));
        } else if (flag == "--set-i32") {
            o.sets.push_back(parse_set(value(), SetKind::I32, flag));
        } else if (flag == "--set-u32") {
            o.sets.push_back(parse_set(value(), SetKind::U32, flag));
        } else if (flag == "--counter") {
            auto [table, addr] = parse_table_addr(value(), 2, flag);
            if (table != Table::Holding && table != Table::Input) usage_error("--counter: table must be hr or ir");
            bool dup = std::any_of(o.counters.begin(), o.counters.end(),
                                   [&](const CounterSpec& c) { return c.table == table && c.addr == addr; });
            if (!dup) o.counters.push_back({table, addr});
        } else if (flag == "--dynamic") {
            no_value();
            o.dynamic = true;
        } else if (flag == "--seed") {
            auto v = parse_int(value());
            if (!v || *v < 0 || *v > static_cast<std::int64_t>(UINT32_MAX)) usage_error("--seed: expected 0..4294967295");
            o.seed = static_cast<std::uint32_t>(*v);
        } else if (flag == "--verbose") {
            no_value();
            o.verbose = true;
        } else if (flag == "--fault-timeout-pct" || flag == "--fault-exception-pct") {
            const std::string v = value();
            auto pct = parse_pct(v);
            if (!pct) usage_error(flag + ": '" + v + "' is not a percentage 0..100 (decimals allowed, e.g. 2.5)");
            (flag == "--fault-timeout-pct" ? o.fault_timeout_pct : o.fault_exception_pct) = *pct;
        } else if (flag == "--stats-file") {
            o.stats_file = value();
            if (o.stats_file.empty()) usage_error("--stats-file: empty file name");
        } else if (flag == "--fw-version" || flag == "--fw-new-version") {
            std::string v = value();
            if (v.empty() || v.size() > 16) usage_error(flag + ": expected 1..16 characters");
            (flag == "--fw-version" ? o.fw_version : o.fw_new_version) = v;
        } else if (flag == "--fw-fail") {
            std::string v = value();
            if (v == "crc") o.fw_fail = Options::FwFail::Crc;
            else if (v == "old-version") o.fw_fail = Options::FwFail::OldVersion;
            else if (v == "silent") o.fw_fail = Options::FwFail::Silent;
            else usage_error("--fw-fail: expected crc, old-version or silent");
        } else if (flag == "--fw-fail-after" || flag == "--fw-reboot-ms" || flag == "--fw-verify-ms" ||
                   flag == "--fw-busy-ms") {
            auto v = parse_int(value());
            if (!v || *v < 0 || *v > 600000) usage_error(flag + ": expected 0..600000");
            int n = static_cast<int>(*v);
            if (flag == "--fw-fail-after") o.fw_fail_after = n;
            else if (flag == "--fw-reboot-ms") o.fw_reboot_ms = n;
            else if (flag == "--fw-verify-ms") o.fw_verify_ms = n;
            else o.fw_busy_ms = n;
        } else if (flag == "--fw-word-order") {
            std::string v = value();
            if (v != "high" && v != "low") usage_error("--fw-word-order: expected high or low");
            o.fw_low_word_first = v == "low";
        } else if (flag == "--fw-byte-order") {
            std::string v = value();
            if (v != "big" && v != "little") usage_error("--fw-byte-order: expected big or little");
            o.fw_little_bytes = v == "little";
        } else if (flag == "--rtu") {
            if (!o.rtu_path.empty()) usage_error("--rtu: only one serial line per process");
            o.rtu_path = value();
            if (o.rtu_path.empty()) usage_error("--rtu: empty path");
        } else if (flag == "--baud") {
            rtu_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || !standard_baud(*v)) usage_error("--baud: expected a standard rate such as 9600 or 19200");
            o.baud = static_cast<int>(*v);
        } else if (flag == "--parity") {
            rtu_flags.push_back(flag);
            std::string v = value();
            if (v != "N" && v != "E" && v != "O") usage_error("--parity: expected N, E or O");
            o.parity = v[0];
        } else if (flag == "--data-bits") {
            rtu_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || (*v != 7 && *v != 8)) usage_error("--data-bits: expected 7 or 8");
            o.data_bits = static_cast<int>(*v);
        } else if (flag == "--stop-bits") {
            rtu_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || (*v != 1 && *v != 2)) usage_error("--stop-bits: expected 1 or 2");
            o.stop_bits = static_cast<int>(*v);
        } else if (flag == "--slaves") {
            rtu_flags.push_back(flag);
            o.slaves = parse_id_list(value(), flag);
        } else if (flag == "--mute-slaves") {
            rtu_flags.push_back(flag);
            o.mute_slaves = parse_id_list(value(), flag);
        } else if (flag == "--turnaround-ms") {
            rtu_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || *v < 0 || *v > 10000) usage_error("--turnaround-ms: expected 0..10000");
            o.turnaround_ms = static_cast<int>(*v);
        } else if (flag == "--late-slaves") {
            rtu_flags.push_back(flag);
            o.late_slaves = parse_id_list(value(), flag);
        } else if (flag == "--late-ms") {
            rtu_flags.push_back(flag);
            auto v = parse_int(value());
            if (!v || *v < 0 || *v > 10000) usage_error("--late-ms: expected 0..10000");
            o.late_ms = static_cast<int>(*v);
        } else {
            usage_error("unknown argument '" + arg + "'");
        }
    }
    if (!o.rtu_path.empty() && !tcp_flags.empty())
        usage_error(tcp_flags.front() + " is a TCP option and cannot be used with --rtu");
    if (o.rtu_path.empty() && !rtu_flags.empty())
        usage_error(rtu_flags.front() + " needs --rtu PATH");
    in_addr probe{};
    if (o.host.size() > 15 || inet_pton(AF_INET, o.host.c_str(), &probe) != 1)
        usage_error("--host: '" + o.host + "' is not an IPv4 address");
    if (o.port != 0 && o.port + o.devices - 1 > 65535) usage_error("--port + --devices exceeds port 65535");
    if (o.late_ms > 0 && o.late_slaves.empty()) usage_error("--late-ms needs --late-slaves LIST");
    return o;
}

// ---------------------------------------------------------------------------
// Register helpers

std::uint16_t* reg_table(modbus_mapping_t* m, Table t) {
    return t == Table::Holding ? m->tab_registers : m->tab_input_registers;
}

void put_u32(std::uint16_t* regs, int addr, std::uint32_t v) {
    regs[addr] = static_cast<std::uint16_t>(v >> 16);
    regs[addr + 1] = static_cast<std::uint16_t>(v & 0xFFFFu);
}

std::uint32_t get_u32(const std::uint16_t* regs, int addr) {
    return (static_cast<std::uint32_t>(regs[addr]) << 16) | regs[addr + 1];
}

void put_f32(std::uint16_t* regs, int addr, float f) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &f, sizeof bits);
    put_u32(regs, addr, bits);
}

float get_f32(const std::uint16_t* regs, int addr) {
    std::uint32_t bits = get_u32(regs, addr);
    float f = 0.0f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

void load_defaults(modbus_mapping_t* m) {
    std::uint16_t* hr = m->tab_registers;
    hr[0] = 815;                                   // fill level 81.5 %
    hr[1] = static_cast<std::uint16_t>(261);       // temperature 26.1 C (i16)
    put_f32(hr, 2, 3.2f);                          // nh3 ppm
    hr[4] = 0;                                     // free
    hr[5] = 0;
    put_f32(hr, 6, 0.15f);                         // h2s ppm
    std::uint16_t* ir = m->tab_input_registers;
    ir[0] = 64;                                    // water level %
    put_u32(ir, 1, static_cast<std::uint32_t>(static_cast<std::int32_t>(-123456)));  // debug_i32
    m->tab_bits[0] = 1;                            // uv lamp on
    m->tab_bits[1] = 0;                            // deodorizer
    m->tab_input_bits[0] = 0;                      // door open
    m->tab_input_bits[1] = 0;                      // smoke
}

void apply_set(modbus_mapping_t* m, const SetOp& op) {
    if (op.table == Table::Coil || op.table == Table::DiscreteInput) {
        std::uint8_t* bits = op.table == Table::Coil ? m->tab_bits : m->tab_input_bits;
        bits[op.addr] = op.ivalue ? 1 : 0;
        return;
    }
    std::uint16_t* regs = reg_table(m, op.table);
    switch (op.kind) {
    case SetKind::Raw: regs[op.addr] = static_cast<std::uint16_t>(op.ivalue & 0xFFFF); break;
    case SetKind::I32:
        put_u32(regs, op.addr, static_cast<std::uint32_t>(static_cast<std::int32_t>(op.ivalue)));
        break;
    case SetKind::U32: put_u32(regs, op.addr, static_cast<std::uint32_t>(op.ivalue)); break;
    case SetKind::F32: put_f32(regs, op.addr, op.fvalue); break;
    }
}

// ---------------------------------------------------------------------------
// Devices

// CRC-32 (IEEE 802.3, as zlib's crc32), bit by bit: the gateway has its own table-driven one,
// so the two check each other.
std::uint32_t crc32_ieee(const std::uint8_t* p, std::size_t n) {
    std::uint32_t crc = 0xFFFFFFFFu;
    for (std::size_t i = 0; i < n; ++i) {
        crc ^= p[i];
        for (int k = 0; k < 8; ++k) crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    return ~crc;
}

// The version an image declares: "SGFW" then the version and a NUL at its start.
std::string image_version(const std::vector<std::uint8_t>& img) {
    if (img.size() < 6 || std::memcmp(img.data(), "SGFW", 4) != 0) return {};
    std::string v;
    for (std::size_t i = 4; i < img.size() && i < 4 + 16; ++i) {
        if (img[i] == 0) return v;
        if (img[i] < 0x20 || img[i] > 0x7E) return {};
        v.push_back(static_cast<char>(img[i]));
    }
    return {};
}

// One device's bootloader (see the kFw* registers above).
struct Boot {
    using clock = std::chrono::steady_clock;
    int status = kFwIdle;
    int error = 0;
    std::vector<std::uint8_t> image;
    std::uint32_t size = 0;
    std::uint32_t received = 0;
    std::uint32_t last_offset = 0;  // of the last chunk taken (it may come again)
    int chunks = 0;
    clock::time_point busy_until{};
    clock::time_point verify_until{};
    bool rebooting = false;
    clock::time_point reboot_until{};
    std::string next_version;  // what the device runs after the reboot
    bool silent = false;       // --fw-fail silent: answers nothing any more
};

struct Device {
    int index = 0;
    int unit = 0;  // RTU: slave id served by this device
    modbus_t* ctx = nullptr;
    modbus_mapping_t* map = nullptr;
    int listen_fd = -1;
    int port = 0;
    std::vector<int> clients;
    // Bootloader: its window (holding registers kFwBase.. only) and state.
    modbus_mapping_t* fw_map = nullptr;
    std::string version;
    Boot boot;
    // --dynamic state
    std::mt19937 rng;
    bool empty_next_tick = false;
    // --fault-* draws: a generator of its own, so that they are reproducible
    // per device whatever the other devices are asked, and --dynamic.
    std::mt19937 fault_rng;
    // Statistics, printed at exit (and written to --stats-file).
    std::uint64_t answered_reads = 0;  // FC 1-4 answered with data, outside the firmware window
    std::uint64_t fault_timeouts = 0;
    std::uint64_t fault_exceptions = 0;
    std::uint64_t late_answers = 0;    // RTU: answers sent by a --late-slaves id
};

void dynamic_step(Device& d) {
    std::uint16_t* hr = d.map->tab_registers;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::normal_distribution<double> noise(0.0, 1.0);
    bool door = d.map->tab_input_bits[0] != 0;

    // Fill level: rises 0.5..2 % per second, emptied to 5..15 % after reaching 100 %.
    double fill = hr[0] / 10.0;
    if (d.empty_next_tick) {
        fill = 5.0 + 10.0 * unit(d.rng);
        d.empty_next_tick = false;
        door = true;  // the crew opened the door to empty the bins
    } else {
        fill += 0.5 + 1.5 * unit(d.rng);
        if (fill >= 100.0) {
            fill = 100.0;
            d.empty_next_tick = true;
        }
    }
    fill = std::clamp(fill, 0.0, 100.0);
    hr[0] = static_cast<std::uint16_t>(std::lround(fill * 10.0));

    // Door: opens now and then, does not stay open for long.
    if (door) {
        if (unit(d.rng) < 0.35) door = false;
    } else if (unit(d.rng) < 0.04) {
        door = true;
    }
    d.map->tab_input_bits[0] = door ? 1 : 0;

    // Temperature: mean-reverting random walk within 18..32 C.
    double temp = static_cast<std::int16_t>(hr[1]) / 10.0;
    if (temp < 18.0 || temp > 32.0) temp = 25.0;
    temp += 0.05 * (25.0 - temp) + 0.3 * noise(d.rng) - (door ? 0.2 : 0.0);
    temp = std::clamp(temp, 18.0, 32.0);
    hr[1] = static_cast<std::uint16_t>(static_cast<std::int16_t>(std::lround(temp * 10.0)));

    // NH3: follows the amount of garbage, vented by an open door, 0.5..15 ppm.
    double nh3 = get_f32(hr, 2);
    double target = 0.5 + 12.0 * fill / 100.0;
    if (door) target *= 0.5;
    if (!std::isfinite(nh3)) nh3 = target;
    nh3 += 0.2 * (target - nh3) + 0.4 * noise(d.rng);
    nh3 = std::clamp(nh3, 0.5, 15.0);
    put_f32(hr, 2, static_cast<float>(nh3));
}

bool range_ok(int addr, int count, int max_count) {
    return count >= 1 && count <= max_count && addr >= 0 && addr + count <= kTableSize;
}

std::uint16_t be16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

enum class Fault { None, Timeout, Exception };

// A read request (FC 1-4) with a valid range that is answered with data.
bool is_data_read(const std::uint8_t* req, int len, int hdr) {
    if (len < hdr + 5) return false;
    const int fc = req[hdr];
    if (fc < 0x01 || fc > 0x04) return false;
    const int max = fc <= 0x02 ? MODBUS_MAX_READ_BITS : MODBUS_MAX_READ_REGISTERS;
    return range_ok(be16(req + hdr + 1), be16(req + hdr + 3), max);
}

const char* fc_name(int fc) {
    switch (fc) {
    case 0x01: return "read_coils";
    case 0x02: return "read_discrete_inputs";
    case 0x03: return "read_holding_registers";
    case 0x04: return "read_input_registers";
    case 0x05: return "write_single_coil";
    case 0x06: return "write_single_register";
    case 0x0F: return "write_multiple_coils";
    case 0x10: return "write_multiple_registers";
    case 0x16: return "mask_write_register";
    case 0x17: return "read_write_registers";
    default: return "other";
    }
}

// " unit U fc 0xNN name addr A count C" for a request whose function code is at req[hdr].
std::string describe_request(const std::uint8_t* req, int len, int hdr) {
    if (len <= hdr) return " short request";
    const int fc = req[hdr];
    char buf[96];
    std::snprintf(buf, sizeof buf, " unit %d fc 0x%02X %s", req[hdr - 1], fc, fc_name(fc));
    std::string line = buf;
    if (len >= hdr + 5) {
        const int a = be16(req + hdr + 1);
        const int b = be16(req + hdr + 3);
        if (fc == 0x05 || fc == 0x06)
            std::snprintf(buf, sizeof buf, " addr %d value %d", a, b);
        else
            std::snprintf(buf, sizeof buf, " addr %d count %d", a, b);
        line += buf;
        if (fc == 0x17 && len >= hdr + 9) {
            std::snprintf(buf, sizeof buf, " write addr %d count %d", be16(req + hdr + 5), be16(req + hdr + 7));
            line += buf;
        }
    }
    return line;
}

// ---------------------------------------------------------------------------
// RTU framing. libmodbus's modbus_receive() cannot serve several slave ids on
// one line: it drops requests for any id but the context's one, and after
// such a request it parses the next frame on the line as that slave's answer
// (which never comes when nobody has that id), losing sync. So the simulator
// frames requests itself and hands complete ones to modbus_reply().

// Length (address + PDU + CRC) of the RTU request starting at b, from its
// function code: 0 = more bytes needed to tell, -1 = no fixed layout (the
// frame ends at the first silence instead).
int rtu_request_length(const std::uint8_t* b, std::size_t n) {
    if (n < 2) return 0;
    switch (b[1]) {
    case 0x01: case 0x02: case 0x03: case 0x04: case 0x05: case 0x06: case 0x08: return 8;
    case 0x07: case 0x0B: case 0x0C: case 0x11: return 4;
    case 0x0F: case 0x10: return n < 7 ? 0 : 9 + b[6];
    case 0x16: return 10;
    case 0x17: return n < 11 ? 0 : 13 + b[10];
    case 0x18: return 6;
    default: return -1;
    }
}

// CRC-16/MODBUS: polynomial 0xA001 (reflected), init 0xFFFF, sent low byte first.
bool rtu_crc_ok(const std::uint8_t* p, std::size_t n) {
    if (n < 4) return false;
    std::uint16_t crc = 0xFFFF;
    for (std::size_t i = 0; i + 2 < n; ++i) {
        crc ^= p[i];
        for (int k = 0; k < 8; ++k)
            crc = static_cast<std::uint16_t>((crc & 1u) ? (crc >> 1) ^ 0xA001u : crc >> 1);
    }
    return p[n - 2] == (crc & 0xFFu) && p[n - 1] == (crc >> 8);
}

class Simulator {
public:
    explicit Simulator(Options opts) : opts_(std::move(opts)) {}

    ~Simulator() {
        for (Device& d : devices_) {
            for (int fd : d.clients) close(fd);
            if (d.listen_fd >= 0) close(d.listen_fd);
            if (d.ctx) {
                modbus_set_socket(d.ctx, -1);
                modbus_free(d.ctx);
            }
            if (d.map) modbus_mapping_free(d.map);
            if (d.fw_map) modbus_mapping_free(d.fw_map);
        }
        if (rtu_ctx_) {
            if (rtu_fd_ >= 0) modbus_close(rtu_ctx_);
            modbus_free(rtu_ctx_);
        }
    }

    Simulator(const Simulator&) = delete;
    Simulator& operator=(const Simulator&) = delete;

    bool start() {
        if (!opts_.port_file.empty()) unlink(opts_.port_file.c_str());
        if (!opts_.stats_file.empty()) unlink(opts_.stats_file.c_str());
        devices_.resize(static_cast<std::size_t>(opts_.devices));
        for (int i = 0; i < opts_.devices; ++i) {
            Device& d = devices_[static_cast<std::size_t>(i)];
            d.index = i;
            d.rng.seed(opts_.seed * 1000003u + static_cast<std::uint32_t>(i) * 7919u + 1u);
            d.fault_rng.seed(fault_seed(i));
            const int port = opts_.port == 0 ? 0 : opts_.port + i;
            d.ctx = modbus_new_tcp(opts_.host.c_str(), port);
            if (!d.ctx) {
                std::fprintf(stderr, "modbus_sim: modbus_new_tcp failed: %s\n", modbus_strerror(errno));
                return false;
            }
            // Single-threaded server: keep libmodbus's blocking waits short.
            // The byte timeout bounds the wait for the rest of a partial
            // request; the response timeout is only used by modbus_reply as a
            // sleep before flushing a malformed request (illegal quantity,
            // unknown function code), which would otherwise stall every
            // client for 0.5 s.
            modbus_set_byte_timeout(d.ctx, 0, kByteTimeoutUs);
            modbus_set_response_timeout(d.ctx, 0, kFlushSleepUs);
            d.map = modbus_mapping_new_start_address(0, kTableSize, 0, kTableSize, 0, kTableSize, 0, kTableSize);
            if (!d.map) {
                std::fprintf(stderr, "modbus_sim: modbus_mapping_new failed: %s\n", modbus_strerror(errno));
                return false;
            }
            load_defaults(d.map);
            for (const SetOp& op : opts_.sets) apply_set(d.map, op);
            if (!fw_init(d)) return false;

            d.listen_fd = modbus_tcp_listen(d.ctx, kListenBacklog);
            if (d.listen_fd < 0) {
                std::fprintf(stderr, "modbus_sim: device %d: cannot listen on %s:%d: %s\n", i, opts_.host.c_str(),
                             port, modbus_strerror(errno));
                return false;
            }
            int flags = fcntl(d.listen_fd, F_GETFL, 0);
            fcntl(d.listen_fd, F_SETFL, flags | O_NONBLOCK);
            fcntl(d.listen_fd, F_SETFD, FD_CLOEXEC);
            sockaddr_in sa{};
            socklen_t len = sizeof sa;
            if (getsockname(d.listen_fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
                std::fprintf(stderr, "modbus_sim: getsockname: %s\n", std::strerror(errno));
                return false;
            }
            d.port = ntohs(sa.sin_port);
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: device %d listening on %s:%d\n", i, opts_.host.c_str(), d.port);
        }
        if (!opts_.port_file.empty() && !write_port_file()) return false;

        std::string ports;
        for (std::size_t i = 0; i < devices_.size(); ++i) {
            if (devices_.size() > 12 && i == 6) {
                ports += " ...";
                i = devices_.size() - 4;
            }
            ports.push_back(' ');
            ports.append(std::to_string(devices_[i].port));
        }
        std::fprintf(stderr, "modbus_sim: %d device(s) on %s, ports:%s%s%s\n", opts_.devices, opts_.host.c_str(),
                     ports.c_str(), opts_.dynamic ? " (dynamic)" : "", fault_summary().c_str());
        return true;
    }

    void run() {
        using clock = std::chrono::steady_clock;
        sigset_t wait_mask;
        sigprocmask(SIG_SETMASK, nullptr, &wait_mask);
        for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2}) sigdelset(&wait_mask, s);

        auto next_tick = clock::now() + std::chrono::seconds(1);
        auto accept_pause_until = clock::time_point{};
        bool muted = false;
        std::vector<pollfd> pfds;
        std::vector<std::pair<int, int>> owners;  // (device index, client fd or -1 for listener)

        while (!g_stop) {
            const auto now = clock::now();
            if (opts_.dynamic && now >= next_tick) {
                for (Device& d : devices_) dynamic_step(d);
                next_tick += std::chrono::seconds(1);
                if (next_tick <= now) next_tick = now + std::chrono::seconds(1);
            }

            pfds.clear();
            owners.clear();
            const bool accepting = now >= accept_pause_until;
            for (Device& d : devices_) {
                fw_tick(d);
                if (d.boot.rebooting && !d.clients.empty()) {
                    // Rebooting: every connection of the device goes away.
                    for (int fd : d.clients) close(fd);
                    d.clients.clear();
                }
            }
            for (Device& d : devices_) {
                if (accepting) {
                    pfds.push_back({d.listen_fd, POLLIN, 0});
                    owners.emplace_back(d.index, -1);
                }
                for (int fd : d.clients) {
                    pfds.push_back({fd, POLLIN, 0});
                    owners.emplace_back(d.index, fd);
                }
            }

            auto wait = std::chrono::milliseconds(100);
            if (opts_.dynamic) {
                auto until_tick = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now) +
                                  std::chrono::milliseconds(1);
                wait = std::clamp(until_tick, std::chrono::milliseconds(0), wait);
            }
            timespec ts{0, static_cast<long>(wait.count()) * 1000000L};
            int n = ppoll(pfds.data(), pfds.size(), &ts, &wait_mask);
            // ppoll() only runs the handlers when it fails with EINTR; a signal
            // sent just before a request arrived may still be pending. Let it
            // in now, so that e.g. "kill -USR1; send request" is never answered.
            sigset_t saved;
            sigprocmask(SIG_SETMASK, &wait_mask, &saved);
            sigprocmask(SIG_SETMASK, &saved, nullptr);

            if (g_stop) break;
            if (static_cast<bool>(g_mute) != muted) {
                muted = g_mute != 0;
                std::fprintf(stderr, "modbus_sim: %s\n",
                             muted ? "muted (SIGUSR1): requests are read but not answered"
                                   : "unmuted (SIGUSR2): answering again");
            }
            if (n < 0) {
                if (errno == EINTR) continue;
                std::fprintf(stderr, "modbus_sim: ppoll: %s\n", std::strerror(errno));
                break;
            }
            if (n == 0) continue;

            for (std::size_t k = 0; k < pfds.size(); ++k) {
                if (pfds[k].revents == 0) continue;
                Device& d = devices_[static_cast<std::size_t>(owners[k].first)];
                if (owners[k].second < 0) {
                    if (!accept_clients(d)) accept_pause_until = clock::now() + std::chrono::milliseconds(100);
                } else if (!serve_one(d, owners[k].second, muted)) {
                    drop_client(d, owners[k].second);
                }
            }
        }
    }

    // RTU mode: one device per slave id, all on one serial line.
    bool start_rtu() {
        unit_device_.fill(-1);
        muted_unit_.fill(false);
        for (int id : opts_.mute_slaves) muted_unit_[static_cast<std::size_t>(id)] = true;
        late_unit_.fill(false);
        for (int id : opts_.late_slaves) late_unit_[static_cast<std::size_t>(id)] = true;
        if (!opts_.stats_file.empty()) unlink(opts_.stats_file.c_str());
        devices_.resize(opts_.slaves.size());
        for (std::size_t i = 0; i < opts_.slaves.size(); ++i) {
            Device& d = devices_[i];
            d.index = static_cast<int>(i);
            d.unit = opts_.slaves[i];
            unit_device_[static_cast<std::size_t>(d.unit)] = d.index;
            d.rng.seed(opts_.seed * 1000003u + static_cast<std::uint32_t>(i) * 7919u + 1u);
            d.fault_rng.seed(fault_seed(static_cast<int>(i)));
            d.map = modbus_mapping_new_start_address(0, kTableSize, 0, kTableSize, 0, kTableSize, 0, kTableSize);
            if (!d.map) {
                std::fprintf(stderr, "modbus_sim: modbus_mapping_new failed: %s\n", modbus_strerror(errno));
                return false;
            }
            load_defaults(d.map);
            for (const SetOp& op : opts_.sets) apply_set(d.map, op);
            if (!fw_init(d)) return false;
        }
        rtu_ctx_ = modbus_new_rtu(opts_.rtu_path.c_str(), opts_.baud, opts_.parity, opts_.data_bits, opts_.stop_bits);
        if (!rtu_ctx_) {
            std::fprintf(stderr, "modbus_sim: modbus_new_rtu(%s) failed: %s\n", opts_.rtu_path.c_str(),
                         modbus_strerror(errno));
            return false;
        }
        // Only used by modbus_reply as a sleep before flushing a malformed request.
        modbus_set_response_timeout(rtu_ctx_, 0, kFlushSleepUs);
        const int bits = 1 + opts_.data_bits + (opts_.parity == 'N' ? 0 : 1) + opts_.stop_bits;
        const auto char_time = std::chrono::nanoseconds(1'000'000'000LL * bits / opts_.baud);
        // A request without a fixed layout ends at the first silence of t3.5 (at least 5 ms,
        // as a pty and the scheduler add jitter).
        rtu_silence_ = std::max<std::chrono::nanoseconds>(char_time * 7 / 2, std::chrono::milliseconds(5));

        std::string muted;
        if (!opts_.mute_slaves.empty()) muted = ", muted " + format_id_list(opts_.mute_slaves);
        std::string late;
        if (!opts_.late_slaves.empty())
            late = ", late " + format_id_list(opts_.late_slaves) + " answer after " + std::to_string(opts_.late_ms) + " ms";
        std::fprintf(stderr, "modbus_sim: RTU %d %d%c%d on %s, slave(s) %s%s, turnaround %d ms%s%s%s\n", opts_.baud,
                     opts_.data_bits, opts_.parity, opts_.stop_bits, opts_.rtu_path.c_str(),
                     format_id_list(opts_.slaves).c_str(), muted.c_str(), opts_.turnaround_ms, late.c_str(),
                     opts_.dynamic ? " (dynamic)" : "", fault_summary().c_str());
        return open_rtu();  // the first open must work: a wrong path fails fast
    }

    void run_rtu() {
        using clock = std::chrono::steady_clock;
        sigset_t wait_mask;
        sigprocmask(SIG_SETMASK, nullptr, &wait_mask);
        for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2}) sigdelset(&wait_mask, s);
        wait_mask_ = wait_mask;

        auto next_tick = clock::now() + std::chrono::seconds(1);
        bool open_failure_logged = false;
        bool muted = false;
        std::uint8_t buf[512];

        while (!g_stop) {
            auto now = clock::now();
            if (opts_.dynamic && now >= next_tick) {
                for (Device& d : devices_) dynamic_step(d);
                next_tick += std::chrono::seconds(1);
                if (next_tick <= now) next_tick = now + std::chrono::seconds(1);
            }
            if (rtu_fd_ < 0 && now >= next_open_) {
                if (open_rtu(!open_failure_logged)) {
                    open_failure_logged = false;
                } else {
                    open_failure_logged = true;
                    next_open_ = now + kReopenInterval;
                }
            }

            pollfd pfd{rtu_fd_, POLLIN, 0};
            auto wait = std::chrono::nanoseconds(std::chrono::milliseconds(100));
            auto clamp_to = [&](clock::time_point t) {
                wait = std::clamp(std::chrono::duration_cast<std::chrono::nanoseconds>(t - now),
                                  std::chrono::nanoseconds(0), wait);
            };
            if (opts_.dynamic) clamp_to(next_tick + std::chrono::milliseconds(1));
            if (rtu_fd_ < 0) clamp_to(next_open_);
            if (!rx_.empty()) clamp_to(rx_last_ + pending_timeout());
            timespec ts{static_cast<time_t>(wait.count() / 1000000000), static_cast<long>(wait.count() % 1000000000)};
            int n = ppoll(&pfd, rtu_fd_ >= 0 ? 1 : 0, &ts, &wait_mask);
            // As in TCP mode: let a signal sent just before a request in now.
            sigset_t saved;
            sigprocmask(SIG_SETMASK, &wait_mask, &saved);
            sigprocmask(SIG_SETMASK, &saved, nullptr);

            if (g_stop) break;
            if (static_cast<bool>(g_mute) != muted) {
                muted = g_mute != 0;
                std::fprintf(stderr, "modbus_sim: %s\n",
                             muted ? "muted (SIGUSR1): requests are read but not answered"
                                   : "unmuted (SIGUSR2): answering again");
            }
            if (n < 0) {
                if (errno == EINTR) continue;
                std::fprintf(stderr, "modbus_sim: ppoll: %s\n", std::strerror(errno));
                break;
            }
            if (n > 0 && rtu_fd_ >= 0) {
                if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) {
                    close_rtu("hangup");
                    continue;
                }
                // A raw tty with VMIN = VTIME = 0 returns 0 when nothing is left.
                const ssize_t got = read(rtu_fd_, buf, sizeof buf);
                if (got < 0 && errno != EAGAIN && errno != EINTR) {
                    close_rtu(std::strerror(errno));
                    continue;
                }
                if (got > 0) {
                    rx_.insert(rx_.end(), buf, buf + got);
                    rx_last_ = clock::now();
                }
            }
            if (rtu_fd_ >= 0) process_rx();
            if (rtu_fd_ >= 0 && !rx_.empty() && clock::now() - rx_last_ >= pending_timeout()) {
                if (rtu_request_length(rx_.data(), rx_.size()) < 0) {
                    // A request without a fixed layout, complete after the silence.
                    handle_rtu_frame(rx_.data(), rx_.size());
                } else if (opts_.verbose) {
                    std::fprintf(stderr, "modbus_sim: rtu: discarding %zu bytes of an incomplete request\n",
                                 rx_.size());
                }
                rx_.clear();
            }
        }
    }

    // At exit: one line per device to stderr, and the --stats-file.
    void report_stats() {
        const bool rtu = !opts_.rtu_path.empty();
        for (const Device& d : devices_) {
            const std::string who = rtu ? "unit " + std::to_string(d.unit)
                                        : "device " + std::to_string(d.index) + " (port " + std::to_string(d.port) + ")";
            std::fprintf(stderr,
                         "modbus_sim: stats %s: reads answered %llu, timeouts injected %llu, exceptions injected %llu, "
                         "late answers %llu\n",
                         who.c_str(), static_cast<unsigned long long>(d.answered_reads),
                         static_cast<unsigned long long>(d.fault_timeouts),
                         static_cast<unsigned long long>(d.fault_exceptions),
                         static_cast<unsigned long long>(d.late_answers));
        }
        if (!opts_.stats_file.empty()) write_stats_file();
    }

private:
    // --- fault injection -------------------------------------------------

    // Device i's fault generator: device 0 uses --seed itself.
    std::uint32_t fault_seed(int i) const { return opts_.seed + 0x9E3779B9u * static_cast<std::uint32_t>(i); }

    bool faults_on() const { return opts_.fault_timeout_pct > 0.0 || opts_.fault_exception_pct > 0.0; }

    // ", faults: ..." for the startup line, empty without faults.
    std::string fault_summary() const {
        if (!faults_on()) return {};
        auto pct = [](double v) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%g %%", v);
            return std::string(buf);
        };
        std::string s = ", faults:";
        if (opts_.fault_timeout_pct > 0.0) s += " timeout " + pct(opts_.fault_timeout_pct);
        if (opts_.fault_exception_pct > 0.0)
            s += std::string(opts_.fault_timeout_pct > 0.0 ? "," : "") + " exception 02 " + pct(opts_.fault_exception_pct);
        return s + " of reads (seed " + std::to_string(opts_.seed) + ")";
    }

    // A read (FC 1-4) that does not touch the firmware window.
    static bool fault_eligible(const std::uint8_t* req, int len, int hdr) {
        if (len < hdr + 5) return false;
        const int fc = req[hdr];
        if (fc < 0x01 || fc > 0x04) return false;
        const int addr = be16(req + hdr + 1);
        const int end = addr + std::max<int>(be16(req + hdr + 3), 1);
        return end <= kFwBase || addr >= kFwBase + kFwRegs;
    }

    // The fault for one request. Every eligible read of a device that would answer it takes
    // exactly two draws from its generator, the timeout's and then the exception's (the
    // timeout wins), so the timeout pattern does not depend on the exception percentage.
    Fault draw_fault(Device& d, const std::uint8_t* req, int len, int hdr) {
        if (!faults_on() || !fault_eligible(req, len, hdr)) return Fault::None;
        fw_tick(d);
        if (d.boot.rebooting || d.boot.silent) return Fault::None;  // not answered anyway
        auto hit = [&](double pct) { return static_cast<double>(d.fault_rng()) * (100.0 / 4294967296.0) < pct; };
        const bool lost = hit(opts_.fault_timeout_pct);
        const bool exception = hit(opts_.fault_exception_pct);
        return lost ? Fault::Timeout : exception ? Fault::Exception : Fault::None;
    }

    static const char* fault_note(Fault f) {
        switch (f) {
        case Fault::Timeout: return " (fault: no reply)";
        case Fault::Exception: return " (fault: exception 02)";
        case Fault::None: break;
        }
        return "";
    }

    bool write_stats_file() {
        const bool rtu = !opts_.rtu_path.empty();
        const std::string tmp = opts_.stats_file + ".tmp";
        FILE* f = std::fopen(tmp.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "modbus_sim: cannot write %s: %s\n", tmp.c_str(), std::strerror(errno));
            return false;
        }
        for (const Device& d : devices_) {
            const std::string unit = rtu ? std::to_string(d.unit) : "null";
            const std::string port = rtu ? "null" : std::to_string(d.port);
            std::fprintf(f,
                         "{\"device\":%d,\"unit\":%s,\"port\":%s,\"answered_reads\":%llu,\"timeouts\":%llu,"
                         "\"exceptions\":%llu,\"late\":%llu}\n",
                         d.index, unit.c_str(), port.c_str(), static_cast<unsigned long long>(d.answered_reads),
                         static_cast<unsigned long long>(d.fault_timeouts),
                         static_cast<unsigned long long>(d.fault_exceptions),
                         static_cast<unsigned long long>(d.late_answers));
        }
        bool ok = std::fflush(f) == 0;
        ok = (fsync(fileno(f)) == 0) && ok;
        ok = (std::fclose(f) == 0) && ok;
        if (!ok || std::rename(tmp.c_str(), opts_.stats_file.c_str()) != 0) {
            std::fprintf(stderr, "modbus_sim: cannot write %s: %s\n", opts_.stats_file.c_str(), std::strerror(errno));
            unlink(tmp.c_str());
            return false;
        }
        return true;
    }

    // --- bootloader ------------------------------------------------------
    using fw_clock = std::chrono::steady_clock;

    enum class FwVerdict {
        Normal,       // not the bootloader's: serve from the ordinary map
        Answered,     // answered from the firmware window
        NoReply,      // deliberately left unanswered (silent)
        Drop,         // rebooting: TCP drops the connection, RTU stays silent
        ReplyFailed,  // modbus_reply failed (errno set)
    };

    bool fw_init(Device& d) {
        d.fw_map = modbus_mapping_new_start_address(0, 0, 0, 0, kFwBase, kFwRegs, 0, 0);
        if (!d.fw_map) {
            std::fprintf(stderr, "modbus_sim: modbus_mapping_new failed: %s\n", modbus_strerror(errno));
            return false;
        }
        d.version = opts_.fw_version;
        fw_publish(d);
        return true;
    }

    std::uint16_t& fw_reg(Device& d, int addr) { return d.fw_map->tab_registers[addr - kFwBase]; }

    std::uint32_t fw_u32(Device& d, int addr) {
        std::uint32_t a = fw_reg(d, addr), b = fw_reg(d, addr + 1);
        return opts_.fw_low_word_first ? (b << 16) | a : (a << 16) | b;
    }

    std::uint16_t fw_bytes(std::uint8_t hi, std::uint8_t lo) const {
        return opts_.fw_little_bytes ? static_cast<std::uint16_t>((lo << 8) | hi)
                                     : static_cast<std::uint16_t>((hi << 8) | lo);
    }

    // Status, error code and version into the window.
    void fw_publish(Device& d) {
        fw_reg(d, kFwStatus) = static_cast<std::uint16_t>(d.boot.status);
        fw_reg(d, kFwError) = static_cast<std::uint16_t>(d.boot.error);
        for (int i = 0; i < kFwVersionLen; ++i) {
            auto at = [&](std::size_t k) -> std::uint8_t {
                return k < d.version.size() ? static_cast<std::uint8_t>(d.version[k]) : 0;
            };
            fw_reg(d, kFwVersion + i) = fw_bytes(at(2 * i), at(2 * i + 1));
        }
    }

    void fw_log(const Device& d, const std::string& what) {
        if (opts_.rtu_path.empty())
            std::fprintf(stderr, "modbus_sim: device %d (port %d): firmware: %s\n", d.index, d.port, what.c_str());
        else
            std::fprintf(stderr, "modbus_sim: unit %d: firmware: %s\n", d.unit, what.c_str());
    }

    void fw_fail(Device& d, int code, const std::string& why) {
        d.boot.status = kFwFailed;
        d.boot.error = code;
        d.boot.image.clear();
        fw_log(d, "error " + std::to_string(code) + ": " + why);
    }

    // Moves time-driven states on: verification done, reboot over.
    void fw_tick(Device& d) {
        const auto now = fw_clock::now();
        Boot& b = d.boot;
        if (b.status == kFwVerifying && now >= b.verify_until) {
            const std::uint32_t crc = crc32_ieee(b.image.data(), b.image.size());
            const std::uint32_t want = fw_u32(d, kFwChecksum);
            char buf[96];
            std::snprintf(buf, sizeof buf, "CRC-32 %08x, checksum register %08x", crc, want);
            if (crc != want || opts_.fw_fail == Options::FwFail::Crc) {
                fw_fail(d, kFwErrChecksum, std::string("checksum mismatch (") + buf +
                                               (crc == want ? ", --fw-fail crc)" : ")"));
            } else {
                b.status = kFwReady;
                std::string v = image_version(b.image);
                b.next_version = !v.empty() ? v : !opts_.fw_new_version.empty() ? opts_.fw_new_version : "unknown";
                fw_log(d, std::string("image verified (") + buf + "), version " + b.next_version);
            }
            fw_publish(d);
        }
        if (b.rebooting && now >= b.reboot_until) {
            b.rebooting = false;
            d.version = b.next_version;
            b = Boot{};
            fw_publish(d);
            fw_log(d, "up again, running " + d.version);
        }
    }

    void fw_control(Device& d, int cmd) {
        Boot& b = d.boot;
        const auto now = fw_clock::now();
        switch (cmd) {
        case 1: {  // begin
            const std::uint32_t size = fw_u32(d, kFwSize);
            b = Boot{};
            if (size == 0 || size > kFwMaxImage) {
                fw_fail(d, kFwErrTooLarge, "begin with size " + std::to_string(size));
                break;
            }
            b.size = size;
            b.image.reserve(size);
            b.status = kFwReceiving;
            fw_log(d, "begin, " + std::to_string(size) + " bytes");
            break;
        }
        case 2:  // commit
            if (b.status != kFwReceiving) {
                fw_fail(d, kFwErrState, "commit while not receiving");
            } else if (b.received != b.size) {
                fw_fail(d, kFwErrIncomplete, "commit after " + std::to_string(b.received) + " of " +
                                                 std::to_string(b.size) + " bytes");
            } else {
                b.status = kFwVerifying;
                b.verify_until = now + std::chrono::milliseconds(opts_.fw_verify_ms);
                fw_log(d, "commit, verifying");
            }
            break;
        case 3: {  // reboot: into the new image only if it was verified
            const bool install = b.status == kFwReady && opts_.fw_fail != Options::FwFail::OldVersion;
            std::string next = install ? b.next_version : d.version;
            b = Boot{};
            b.rebooting = true;
            b.reboot_until = now + std::chrono::milliseconds(opts_.fw_reboot_ms);
            b.next_version = next;
            fw_log(d, "rebooting for " + std::to_string(opts_.fw_reboot_ms) + " ms into " + next +
                          (install || next != d.version ? "" : " (the old version)"));
            break;
        }
        case 4:  // abort
            b = Boot{};
            fw_log(d, "abort");
            break;
        default: fw_fail(d, kFwErrState, "unknown command " + std::to_string(cmd)); break;
        }
        fw_publish(d);
    }

    void fw_chunk(Device& d, int write_end) {
        Boot& b = d.boot;
        const std::uint32_t off = fw_u32(d, kFwOffset);
        const int len = fw_reg(d, kFwChunkLen);
        const std::string at = "chunk at " + std::to_string(off) + " (" + std::to_string(len) + " bytes)";
        if (b.status != kFwReceiving) return fw_fail(d, kFwErrState, at + " while not receiving"), fw_publish(d);
        if (len < 1 || len > 2 * kFwMaxChunk || write_end < kFwData + (len + 1) / 2)
            return fw_fail(d, kFwErrOrder, at + ": bad length"), fw_publish(d);
        if (off + static_cast<std::uint32_t>(len) > b.size)
            return fw_fail(d, kFwErrTooLarge, at + ": beyond the size"), fw_publish(d);
        std::vector<std::uint8_t> bytes(static_cast<std::size_t>(len));
        for (int i = 0; i < len; ++i) {
            const std::uint16_t r = fw_reg(d, kFwData + i / 2);
            const std::uint8_t hi = static_cast<std::uint8_t>(r >> 8), lo = static_cast<std::uint8_t>(r & 0xFF);
            const bool first = i % 2 == 0;
            bytes[static_cast<std::size_t>(i)] = opts_.fw_little_bytes ? (first ? lo : hi) : (first ? hi : lo);
        }
        if (off == b.received) {
            b.image.insert(b.image.end(), bytes.begin(), bytes.end());
            b.last_offset = off;
            b.received += static_cast<std::uint32_t>(len);
            b.chunks++;
        } else if (b.chunks > 0 && off == b.last_offset && off + static_cast<std::uint32_t>(len) == b.received) {
            std::copy(bytes.begin(), bytes.end(), b.image.begin() + off);  // the last chunk again
        } else {
            return fw_fail(d, kFwErrOrder, at + ", expected " + std::to_string(b.received)), fw_publish(d);
        }
        if (opts_.verbose) fw_log(d, at + " taken, " + std::to_string(b.received) + " bytes so far");
        if (opts_.fw_busy_ms > 0) b.busy_until = fw_clock::now() + std::chrono::milliseconds(opts_.fw_busy_ms);
    }

    // The bootloader's part of serving one request (function code at req[hdr]).
    FwVerdict fw_serve(Device& d, modbus_t* ctx, const std::uint8_t* req, int len, int hdr) {
        fw_tick(d);
        if (d.boot.rebooting) return FwVerdict::Drop;
        if (d.boot.silent) return FwVerdict::NoReply;
        if (len < hdr + 5) return FwVerdict::Normal;
        const int fc = req[hdr];
        const int addr = be16(req + hdr + 1);
        if ((fc != 0x03 && fc != 0x06 && fc != 0x10) || addr < kFwBase) return FwVerdict::Normal;
        const int count = fc == 0x06 ? 1 : be16(req + hdr + 3);
        if (opts_.fw_fail == Options::FwFail::Silent && d.boot.status == kFwReceiving &&
            d.boot.chunks >= opts_.fw_fail_after && fc == 0x10 && addr <= kFwData && kFwData < addr + count) {
            // N chunks taken and acknowledged; the next one meets a dead device.
            d.boot.silent = true;
            fw_log(d, "silent after " + std::to_string(d.boot.chunks) + " chunks (--fw-fail silent)");
            return FwVerdict::NoReply;
        }
        if (fw_clock::now() < d.boot.busy_until) {
            if (modbus_reply_exception(ctx, req, MODBUS_EXCEPTION_SLAVE_OR_SERVER_BUSY) < 0) return FwVerdict::ReplyFailed;
            return FwVerdict::Answered;
        }
        if (modbus_reply(ctx, req, len, d.fw_map) < 0) return FwVerdict::ReplyFailed;
        if (fc == 0x03 || addr + count > kFwBase + kFwRegs || count < 1) return FwVerdict::Answered;
        if (addr <= kFwData && kFwData < addr + count) fw_chunk(d, addr + count);
        if (addr <= kFwControl && kFwControl < addr + count) fw_control(d, fw_reg(d, kFwControl));
        // After answering the reboot command the device goes away.
        return d.boot.rebooting ? FwVerdict::Drop : FwVerdict::Answered;
    }

    // Opens the serial line; returns false (logging why, if log_failure) when it cannot.
    bool open_rtu(bool log_failure = true) {
        if (modbus_connect(rtu_ctx_) != 0) {
            if (log_failure)
                std::fprintf(stderr, "modbus_sim: cannot open %s: %s%s\n", opts_.rtu_path.c_str(),
                             modbus_strerror(errno), rtu_fd_ == -2 ? "; retrying every 200 ms" : "");
            return false;
        }
        rtu_fd_ = modbus_get_socket(rtu_ctx_);
        // Bytes sent while nobody listened are not ours to answer: a device that was away
        // never saw them, and the master gave up on them long ago.
        tcflush(rtu_fd_, TCIFLUSH);
        rx_.clear();
        std::fprintf(stderr, "modbus_sim: serving slave(s) %s on %s\n", format_id_list(opts_.slaves).c_str(),
                     opts_.rtu_path.c_str());
        return true;
    }

    // Closes a failed line; the main loop reopens it after kReopenInterval.
    void close_rtu(const char* why) {
        std::fprintf(stderr, "modbus_sim: lost %s (%s); reopening every 200 ms\n", opts_.rtu_path.c_str(), why);
        modbus_close(rtu_ctx_);
        rtu_fd_ = -2;  // closed after having been open: open failures say that we retry
        rx_.clear();
        next_open_ = std::chrono::steady_clock::now() + kReopenInterval;
    }

    std::chrono::nanoseconds pending_timeout() const {
        return rtu_request_length(rx_.data(), rx_.size()) < 0 ? rtu_silence_
                                                              : std::chrono::nanoseconds(kRtuStallTimeout);
    }

    // Serves every complete request in rx_.
    void process_rx() {
        while (!rx_.empty() && rtu_fd_ >= 0) {
            const int len = rtu_request_length(rx_.data(), rx_.size());
            if (len <= 0) return;  // need more bytes, or wait for the silence
            if (len > MODBUS_RTU_MAX_ADU_LENGTH) {
                if (opts_.verbose)
                    std::fprintf(stderr, "modbus_sim: rtu: discarding an oversized request (%d bytes)\n", len);
                rx_.clear();
                return;
            }
            if (rx_.size() < static_cast<std::size_t>(len)) return;
            if (!handle_rtu_frame(rx_.data(), static_cast<std::size_t>(len))) {
                rx_.clear();  // bad CRC: drop everything and resync on the next request
                return;
            }
            rx_.erase(rx_.begin(), rx_.begin() + len);
        }
    }

    // Sleeps until t; returns early on SIGTERM/SIGINT. The signals are let in meanwhile.
    void sleep_until_or_stop(std::chrono::steady_clock::time_point t) {
        while (!g_stop) {
            auto left = t - std::chrono::steady_clock::now();
            if (left <= std::chrono::nanoseconds(0)) return;
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            ppoll(nullptr, 0, &ts, &wait_mask_);
        }
    }

    // Answers one complete request frame. False = bad CRC.
    bool handle_rtu_frame(const std::uint8_t* req, std::size_t len) {
        if (!rtu_crc_ok(req, len)) {
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: rtu: discarding %zu bytes with a bad CRC\n", len);
            return false;
        }
        const int ilen = static_cast<int>(len);
        const int unit = req[0];
        const bool muted = g_mute != 0;
        if (unit == MODBUS_BROADCAST_ADDRESS) {
            // Every (unmuted) device applies a broadcast write; nobody answers it.
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: rtu:%s (broadcast%s)\n", describe_request(req, ilen, 1).c_str(),
                             muted ? ", muted: ignored" : ", no reply");
            if (muted) return true;
            for (Device& d : devices_) {
                if (muted_unit_[static_cast<std::size_t>(d.unit)]) continue;
                modbus_reply(rtu_ctx_, req, ilen, d.map);
            }
            return true;
        }
        const int idx = unit <= kMaxSlaveId ? unit_device_[static_cast<std::size_t>(unit)] : -1;
        const bool unit_muted = idx >= 0 && muted_unit_[static_cast<std::size_t>(unit)];
        if (idx < 0 || unit_muted || muted) {
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: rtu:%s%s\n", describe_request(req, ilen, 1).c_str(),
                             idx < 0      ? " (not ours, ignored)"
                             : unit_muted ? " (muted slave, no reply)"
                                          : " (muted, no reply)");
            return true;
        }
        Device& d = devices_[static_cast<std::size_t>(idx)];
        const bool late = late_unit_[static_cast<std::size_t>(unit)];
        // Drawn before the wait: a lost request does not hold the line, even for a late slave.
        const Fault fault = draw_fault(d, req, ilen, 1);
        if (opts_.verbose)
            std::fprintf(stderr, "modbus_sim: rtu:%s%s%s\n", describe_request(req, ilen, 1).c_str(), fault_note(fault),
                         late && fault != Fault::Timeout ? " (late slave)" : "");
        if (fault == Fault::Timeout) {
            d.fault_timeouts++;
            return true;
        }
        // A late slave answers --late-ms after the request instead of --turnaround-ms; requests
        // arriving meanwhile (for any slave) wait in the tty until its answer has gone out.
        const int delay_ms = late ? opts_.late_ms : opts_.turnaround_ms;
        if (delay_ms > 0) {
            sleep_until_or_stop(rx_last_ + std::chrono::milliseconds(delay_ms));
            if (g_stop || g_mute) return true;  // muted or stopped while "processing"
        }
        modbus_set_slave(rtu_ctx_, unit);
        if (fault == Fault::Exception) {
            if (modbus_reply_exception(rtu_ctx_, req, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS) < 0) {
                const int err = errno;
                if (opts_.verbose)
                    std::fprintf(stderr, "modbus_sim: rtu: reply to unit %d failed: %s\n", unit, modbus_strerror(err));
                if (err == EIO || err == EBADF || err == ENXIO || err == ENODEV) close_rtu(modbus_strerror(err));
                return true;
            }
            d.fault_exceptions++;
            if (late) d.late_answers++;
            return true;
        }
        switch (fw_serve(d, rtu_ctx_, req, ilen, 1)) {
        case FwVerdict::Normal: break;
        case FwVerdict::Answered:
            if (late) d.late_answers++;
            return true;
        case FwVerdict::NoReply:
        case FwVerdict::Drop: return true;  // a rebooting slave is silent
        case FwVerdict::ReplyFailed: {
            const int err = errno;
            if (err == EIO || err == EBADF || err == ENXIO || err == ENODEV) close_rtu(modbus_strerror(err));
            return true;
        }
        }
        bump_counters(d, req, ilen, 1);
        if (modbus_reply(rtu_ctx_, req, ilen, d.map) < 0) {
            const int err = errno;
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: rtu: reply to unit %d failed: %s\n", unit, modbus_strerror(err));
            if (err == EIO || err == EBADF || err == ENXIO || err == ENODEV) close_rtu(modbus_strerror(err));
            return true;
        }
        if (is_data_read(req, ilen, 1)) d.answered_reads++;
        if (late) d.late_answers++;
        return true;
    }

    bool write_port_file() {
        const std::string tmp = opts_.port_file + ".tmp";
        FILE* f = std::fopen(tmp.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "modbus_sim: cannot write %s: %s\n", tmp.c_str(), std::strerror(errno));
            return false;
        }
        for (const Device& d : devices_) std::fprintf(f, "%d\n", d.port);
        bool ok = std::fflush(f) == 0;
        ok = (fsync(fileno(f)) == 0) && ok;
        ok = (std::fclose(f) == 0) && ok;
        if (!ok || std::rename(tmp.c_str(), opts_.port_file.c_str()) != 0) {
            std::fprintf(stderr, "modbus_sim: cannot write %s: %s\n", opts_.port_file.c_str(), std::strerror(errno));
            unlink(tmp.c_str());
            return false;
        }
        return true;
    }

    // Accepts every pending connection. Returns false when out of descriptors.
    bool accept_clients(Device& d) {
        for (;;) {
            int fd = accept4(d.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    std::fprintf(stderr, "modbus_sim: device %d: accept: %s\n", d.index, std::strerror(errno));
                    return false;
                }
                return true;  // EAGAIN or a transient error
            }
            // libmodbus waits for request bytes with select(), which cannot
            // handle descriptors >= FD_SETSIZE: refuse such connections.
            if (fd >= FD_SETSIZE) {
                std::fprintf(stderr, "modbus_sim: device %d: refusing connection, descriptor %d >= FD_SETSIZE\n",
                             d.index, fd);
                close(fd);
                continue;
            }
            if (d.clients.size() >= kMaxClientsPerDevice) {
                if (opts_.verbose)
                    std::fprintf(stderr, "modbus_sim: device %d: refusing connection, %zu clients already\n",
                                 d.index, d.clients.size());
                close(fd);
                continue;
            }
            fw_tick(d);
            if (d.boot.rebooting) {  // a rebooting device takes no connections
                close(fd);
                continue;
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            d.clients.push_back(fd);
            if (opts_.verbose) {
                sockaddr_in peer{};
                socklen_t len = sizeof peer;
                char buf[INET_ADDRSTRLEN] = "?";
                if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0)
                    inet_ntop(AF_INET, &peer.sin_addr, buf, sizeof buf);
                std::fprintf(stderr, "modbus_sim: device %d (port %d): client fd %d connected from %s:%d (%zu clients)\n",
                             d.index, d.port, fd, buf, ntohs(peer.sin_port), d.clients.size());
            }
        }
    }

    void drop_client(Device& d, int fd) {
        auto it = std::find(d.clients.begin(), d.clients.end(), fd);
        if (it == d.clients.end()) return;
        d.clients.erase(it);
        close(fd);
    }

    // Bumps every counter covered by a valid read request.
    void bump_counters(Device& d, const std::uint8_t* req, int len, int hdr) {
        if (opts_.counters.empty() || len < hdr + 5) return;
        const int fc = req[hdr];
        const int addr = be16(req + hdr + 1);
        const int count = be16(req + hdr + 3);
        Table table;
        if (fc == 0x03) {
            table = Table::Holding;
        } else if (fc == 0x04) {
            table = Table::Input;
        } else if (fc == 0x17 && len >= hdr + 10) {
            table = Table::Holding;
            const int waddr = be16(req + hdr + 5);
            const int wcount = be16(req + hdr + 7);
            const int wbytes = req[hdr + 9];
            if (!range_ok(waddr, wcount, MODBUS_MAX_WR_WRITE_REGISTERS) || wbytes != wcount * 2) return;
        } else {
            return;
        }
        if (!range_ok(addr, count, MODBUS_MAX_READ_REGISTERS)) return;  // answered with an exception
        for (const CounterSpec& c : opts_.counters) {
            if (c.table != table || c.addr < addr || c.addr >= addr + count) continue;
            std::uint16_t* regs = reg_table(d.map, c.table);
            put_u32(regs, c.addr, get_u32(regs, c.addr) + 1u);
        }
    }

    void log_request(const Device& d, int fd, const std::uint8_t* req, int len, int hdr, const char* note) {
        std::string line = "modbus_sim: device " + std::to_string(d.index) + " (port " + std::to_string(d.port) +
                           ") fd " + std::to_string(fd) + ":";
        line += describe_request(req, len, hdr);
        line += note;
        std::fprintf(stderr, "%s\n", line.c_str());
    }

    // Reads and answers one request on a client socket. False = drop client.
    bool serve_one(Device& d, int fd, bool muted) {
        std::uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
        modbus_set_socket(d.ctx, fd);
        const int len = modbus_receive(d.ctx, req);
        if (len < 0) {
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: device %d (port %d): client fd %d closed (%s)\n", d.index, d.port,
                             fd, errno == ECONNRESET ? "disconnected" : modbus_strerror(errno));
            return false;
        }
        if (len == 0) return true;  // request libmodbus chose to ignore
        const int hdr = modbus_get_header_length(d.ctx);
        const Fault fault = muted ? Fault::None : draw_fault(d, req, len, hdr);
        if (opts_.verbose) log_request(d, fd, req, len, hdr, muted ? " (muted, no reply)" : fault_note(fault));
        if (muted) return true;
        if (fault == Fault::Timeout) {
            d.fault_timeouts++;
            return true;
        }
        if (fault == Fault::Exception) {
            if (modbus_reply_exception(d.ctx, req, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS) < 0) {
                if (opts_.verbose)
                    std::fprintf(stderr, "modbus_sim: device %d: reply to fd %d failed: %s\n", d.index, fd,
                                 modbus_strerror(errno));
                return false;
            }
            d.fault_exceptions++;
            return true;
        }
        switch (fw_serve(d, d.ctx, req, len, hdr)) {
        case FwVerdict::Normal: break;
        case FwVerdict::Answered:
        case FwVerdict::NoReply: return true;
        case FwVerdict::Drop: return false;
        case FwVerdict::ReplyFailed:
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: device %d: reply to fd %d failed: %s\n", d.index, fd,
                             modbus_strerror(errno));
            return false;
        }
        bump_counters(d, req, len, hdr);
        if (modbus_reply(d.ctx, req, len, d.map) < 0) {
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: device %d: reply to fd %d failed: %s\n", d.index, fd,
                             modbus_strerror(errno));
            return false;
        }
        if (is_data_read(req, len, hdr)) d.answered_reads++;
        return true;
    }

    Options opts_;
    std::vector<Device> devices_;
    // RTU mode
    modbus_t* rtu_ctx_ = nullptr;
    int rtu_fd_ = -1;  // -1: never opened, -2: lost and being reopened, else the tty
    std::array<int, kMaxSlaveId + 1> unit_device_{};  // unit id -> device index, -1 = not ours
    std::array<bool, kMaxSlaveId + 1> muted_unit_{};
    std::array<bool, kMaxSlaveId + 1> late_unit_{};
    std::vector<std::uint8_t> rx_;  // bytes of the request being received
    std::chrono::steady_clock::time_point rx_last_{};  // when the last of them arrived
    std::chrono::nanoseconds rtu_silence_{};
    std::chrono::steady_clock::time_point next_open_{};  // when to retry opening a lost line
    sigset_t wait_mask_{};
};

void raise_fd_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? 65536 : std::min<rlim_t>(rl.rlim_max, 65536);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void install_signals() {
    sigset_t block;
    sigemptyset(&block);
    for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2}) sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, nullptr);  // only unblocked inside ppoll()

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2}) sigaction(s, &sa, nullptr);

    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
    Options opts = parse_args(argc, argv);
    install_signals();
    raise_fd_limit();
    const bool rtu = !opts.rtu_path.empty();
    Simulator sim(std::move(opts));
    if (rtu) {
        if (!sim.start_rtu()) return 1;
        sim.run_rtu();
    } else {
        if (!sim.start()) return 1;
        sim.run();
    }
    sim.report_stats();
    std::fprintf(stderr, "modbus_sim: exiting\n");
    return 0;
}
