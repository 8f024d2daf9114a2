// Virtual RS-485 line for tests: two pseudo-terminals whose master sides are joined by a thread.
// A Modbus RTU master (the gateway, libmodbus modbus_new_rtu) opens one tty, a slave simulator
// (modbus_sim --rtu) opens the other, and they talk over real tty devices.
//
//   opener A -- /dev/pts/N (pty A slave)          (pty B slave) /dev/pts/M -- opener B
//                      pty A master <-- thread --> pty B master
//
// Pacing: with baud > 0 each byte is delivered one character time (bits_per_char / baud) after
// the previous one in the same direction, and the first byte of a burst one character time after
// it was written, as a UART would: 100 bytes at 9600 8E1 arrive 100 * 11 / 9600 s = 114.6 ms
// after they were written. A pty alone does not enforce any baud rate.
//
// Ownership: owns both ptys (master fds and one held slave fd each, so a master never sees a
// hangup while no opener has the tty open), the bridge thread, a temp dir
// $TMPDIR/sanigate-pty-XXXXXX and the symlinks link_a() / link_b() inside it. The destructor
// stops the thread, closes everything and removes the dir.
// Thread-safety: every public member may be called from any thread while the bridge runs;
// Unplug/Plug hand their work to the bridge thread and return once it is done.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace sanigate::test {

// Declared outside PtyBridge so it can be a defaulted constructor argument.
struct PtyBridgeOptions {
  int baud = 0;            // 0: no pacing, bytes are moved as soon as they are read
  int bits_per_char = 11;  // 11 = 8E1 / 8N2 (the serial-line spec); 10 = 8N1
  // Extra delay before the first byte of each burst flowing B -> A (the slave's answer), on top
  // of the character time. A burst starts when a byte arrives while the B -> A line is idle.
  std::chrono::microseconds turnaround{0};
};

struct PtyBridgeStats {
  std::uint64_t a_to_b = 0;        // bytes written to side B's master (arrived at B's opener)
  std::uint64_t b_to_a = 0;        // bytes written to side A's master
  std::uint64_t dropped_to_a = 0;  // bytes for side A discarded because A was unplugged
  std::uint64_t dropped_to_b = 0;
};

class PtyBridge {
 public:
  using Options = PtyBridgeOptions;
  enum class Side { A, B };

  // Creates both ptys (raw mode), the temp dir with the symlinks and starts the bridge thread.
  // Throws std::runtime_error on failure.
  explicit PtyBridge(Options options = {});
  ~PtyBridge();

  PtyBridge(const PtyBridge&) = delete;
  PtyBridge& operator=(const PtyBridge&) = delete;
  PtyBridge(PtyBridge&&) = delete;
  PtyBridge& operator=(PtyBridge&&) = delete;

  // The current slave tty name (e.g. /dev/pts/7); empty while that side is unplugged. A replug
  // gives a new pty whose name may or may not equal the old one: do not cache it.
  std::string path_a() const { return path(Side::A); }
  std::string path_b() const { return path(Side::B); }
  std::string path(Side side) const;

  // Stable symlink (<dir>/a, <dir>/b) to the current tty of that side. Like a udev
  // /dev/serial/by-id link it is removed by Unplug and recreated by Plug, so an opener of the
  // link gets ENOENT while the "adapter" is out and the new tty after a replug.
  const std::string& link_a() const { return link_a_; }
  const std::string& link_b() const { return link_b_; }
  const std::string& link(Side side) const { return side == Side::A ? link_a_ : link_b_; }

  // Simulates pulling the USB-serial adapter of `side`: removes its link and closes its pty
  // (master and the held slave fd). An opener still holding the old tty sees a hangup: write()
  // fails with EIO, read() returns 0, poll() reports POLLHUP. The device node disappears. Bytes
  // queued for that side are dropped, and so is everything sent to it until Plug. No-op if the
  // side is already unplugged.
  void Unplug(Side side = Side::A);
  // Plugs a NEW pty in for `side` and points its link at it. No-op if already plugged.
  // Throws std::runtime_error if the pty cannot be created.
  void Plug(Side side = Side::A);
  bool plugged(Side side = Side::A) const;

  // Bytes moved each way so far. A byte is counted just after the write() that delivered it
  // returns, so an opener that already read it may briefly see a smaller count.
  PtyBridgeStats Stats() const;

  // One character time (bits_per_char / baud); zero when unpaced.
  std::chrono::nanoseconds char_time() const { return char_time_; }
  const Options& options() const { return options_; }

 private:
  struct End {
    int master = -1;
    int slave = -1;  // held open so the master never reads EIO while no opener has the tty
    std::string name;
  };

  static End OpenEnd();  // openpty + cfmakeraw + O_NONBLOCK/O_CLOEXEC; throws
  static void CloseEnd(End& end) noexcept;
  void UpdateLink(Side side, const std::string& target);  // atomic symlink replace, or remove
  void Wake() noexcept;
  void Run() noexcept;
  void Cleanup() noexcept;  // closes fds, removes links and the dir

  const Options options_;
  const std::chrono::nanoseconds char_time_;
  std::string dir_;
  std::string link_a_;
  std::string link_b_;
  int wake_[2] = {-1, -1};  // self-pipe: makes the thread rebuild its poll set

  mutable std::mutex mu_;
  std::condition_variable done_cv_;
  // All guarded by mu_. Master fds are closed only by the bridge thread.
  End ends_[2];
  bool unplug_request_[2] = {false, false};
  bool stop_ = false;

  std::atomic<std::uint64_t> moved_[2] = {0, 0};    // index = source side
  std::atomic<std::uint64_t> dropped_[2] = {0, 0};  // index = destination side
  std::thread thread_;
};

}  // namespace sanigate::test
