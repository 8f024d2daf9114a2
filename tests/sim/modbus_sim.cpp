// modbus_sim: a Modbus TCP device simulator of a "garbage room controller".
//
// Real Modbus TCP server built on libmodbus. One process simulates N
// independent devices, each with its own listening socket and register map.
// Single-threaded: every listening socket and every client socket is served
// from one ppoll() loop. See README.md in this folder for the register map and
// the command line.

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
#include <unistd.h>

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
#include <vector>

namespace {

constexpr int kTableSize = 100;           // addresses 0..99 in every table
constexpr std::size_t kMaxClientsPerDevice = 256;
constexpr int kListenBacklog = 128;
constexpr std::uint32_t kByteTimeoutUs = 100000;  // 100 ms
constexpr std::uint32_t kFlushSleepUs = 5000;     // 5 ms

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
    std::vector<SetOp> sets;
    std::vector<CounterSpec> counters;
    bool dynamic = false;
    bool verbose = false;
    std::uint32_t seed = 42;
};

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "modbus_sim: %s\n", msg.c_str());
    std::fprintf(stderr, "Try 'modbus_sim --help' for usage.\n");
    std::exit(2);
}

void print_help() {
    std::printf(
        "Usage: modbus_sim [options]\n"
        "Modbus TCP simulator of a garbage room controller (libmodbus).\n"
        "\n"
        "  --devices N               number of independent devices (default 1)\n"
        "  --port P                  port of device 0, device i uses P+i;\n"
        "                            0 (default) = kernel-chosen ports\n"
        "  --host H                  IPv4 address to listen on (default 127.0.0.1)\n"
        "  --port-file FILE          write the ports, one per line, to FILE\n"
        "                            (via FILE.tmp + rename) once listening\n"
        "  --set TABLE:ADDR=VALUE    TABLE: hr|ir|coil|di; hr/ir -32768..65535,\n"
        "                            coil/di 0|1 (repeatable)\n"
        "  --set-f32 TABLE:ADDR=F    float32, ABCD word order (hr|ir)\n"
        "  --set-i32 TABLE:ADDR=I    int32, high word first (hr|ir)\n"
        "  --set-u32 TABLE:ADDR=U    uint32, high word first (hr|ir)\n"
        "  --counter TABLE:ADDR      u32 at ADDR,ADDR+1 (hr|ir) incremented by\n"
        "                            each served read covering ADDR (repeatable)\n"
        "  --dynamic                 evolve fill level/temperature/nh3/door each second\n"
        "  --seed S                  base random seed for --dynamic (default 42)\n"
        "  --verbose                 log every request to stderr\n"
        "  --help                    this text\n"
        "\n"
        "Signals: SIGUSR1 mute (read requests, never reply), SIGUSR2 unmute,\n"
        "SIGTERM/SIGINT exit 0.\n");
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

Options parse_args(int argc, char** argv) {
    Options o;
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
            auto v = parse_int(value());
            if (!v || *v < 1 || *v > 65535) usage_error("--devices: expected an integer >= 1");
            o.devices = static_cast<int>(*v);
        } else if (flag == "--port") {
            auto v = parse_int(value());
            if (!v || *v < 0 || *v > 65535) usage_error("--port: expected 0..65535");
            o.port = static_cast<int>(*v);
        } else if (flag == "--host") {
            o.host = value();
        } else if (flag == "--port-file") {
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
        } else {
            usage_error("unknown argument '" + arg + "'");
        }
    }
    in_addr probe{};
    if (o.host.size() > 15 || inet_pton(AF_INET, o.host.c_str(), &probe) != 1)
        usage_error("--host: '" + o.host + "' is not an IPv4 address");
    if (o.port != 0 && o.port + o.devices - 1 > 65535) usage_error("--port + --devices exceeds port 65535");
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

struct Device {
    int index = 0;
    modbus_t* ctx = nullptr;
    modbus_mapping_t* map = nullptr;
    int listen_fd = -1;
    int port = 0;
    std::vector<int> clients;
    // --dynamic state
    std::mt19937 rng;
    bool empty_next_tick = false;
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
        }
    }

    Simulator(const Simulator&) = delete;
    Simulator& operator=(const Simulator&) = delete;

    bool start() {
        if (!opts_.port_file.empty()) unlink(opts_.port_file.c_str());
        devices_.resize(static_cast<std::size_t>(opts_.devices));
        for (int i = 0; i < opts_.devices; ++i) {
            Device& d = devices_[static_cast<std::size_t>(i)];
            d.index = i;
            d.rng.seed(opts_.seed * 1000003u + static_cast<std::uint32_t>(i) * 7919u + 1u);
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
        std::fprintf(stderr, "modbus_sim: %d device(s) on %s, ports:%s%s\n", opts_.devices, opts_.host.c_str(),
                     ports.c_str(), opts_.dynamic ? " (dynamic)" : "");
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

private:
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

    void log_request(const Device& d, int fd, const std::uint8_t* req, int len, int hdr, bool muted) {
        std::string line = "modbus_sim: device " + std::to_string(d.index) + " (port " + std::to_string(d.port) +
                           ") fd " + std::to_string(fd) + ":";
        if (len <= hdr) {
            line += " short request";
        } else {
            const int fc = req[hdr];
            char buf[96];
            std::snprintf(buf, sizeof buf, " unit %d fc 0x%02X %s", req[hdr - 1], fc, fc_name(fc));
            line += buf;
            if (len >= hdr + 5) {
                const int a = be16(req + hdr + 1);
                const int b = be16(req + hdr + 3);
                if (fc == 0x05 || fc == 0x06)
                    std::snprintf(buf, sizeof buf, " addr %d value %d", a, b);
                else
                    std::snprintf(buf, sizeof buf, " addr %d count %d", a, b);
                line += buf;
                if (fc == 0x17 && len >= hdr + 9) {
                    std::snprintf(buf, sizeof buf, " write addr %d count %d", be16(req + hdr + 5),
                                  be16(req + hdr + 7));
                    line += buf;
                }
            }
        }
        if (muted) line += " (muted, no reply)";
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
        if (opts_.verbose) log_request(d, fd, req, len, hdr, muted);
        if (muted) return true;
        bump_counters(d, req, len, hdr);
        if (modbus_reply(d.ctx, req, len, d.map) < 0) {
            if (opts_.verbose)
                std::fprintf(stderr, "modbus_sim: device %d: reply to fd %d failed: %s\n", d.index, fd,
                             modbus_strerror(errno));
            return false;
        }
        return true;
    }

    Options opts_;
    std::vector<Device> devices_;
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
    Simulator sim(std::move(opts));
    if (!sim.start()) return 1;
    sim.run();
    std::fprintf(stderr, "modbus_sim: exiting\n");
    return 0;
}
