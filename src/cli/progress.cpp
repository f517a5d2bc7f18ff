#include "cli/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "core/stopwatch.h"

namespace calq::cli {

ProgressBar::ProgressBar(std::string unit, int64_t tokens_per_item, bool enabled)
    : unit_(std::move(unit)),
      tokens_per_item_(tokens_per_item),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t done, int64_t total) {
  if (!enabled_ || total <= 0) return;
  const double secs = seconds_since(start_);
  // A rate over less than half a second (the bar is often made as its first item completes) says
  // nothing: shown as "-" until then.
  const std::string rate =
      secs >= 0.5 ? fmt::format("{:.0f}", static_cast<double>(done * tokens_per_item_) / secs) : std::string("-");
  const double eta = done > 0 ? secs * static_cast<double>(total - done) / static_cast<double>(done) : 0.0;
  const int eta_s = static_cast<int>(eta + 0.5);
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total);
    fmt::print(stderr, "\r[{}{}] {}/{} {}  {} tok/s  ETA {}:{:02d} ", std::string(filled, '#'),
               std::string(kWidth - filled, '.'), done, total, unit_, rate, eta_s / 60, eta_s % 60);
    std::fflush(stderr);
    drawn_ = true;
    return;
  }
  const int decile = static_cast<int>(10 * done / total);
  if (decile != last_decile_) {
    last_decile_ = decile;
    fmt::print(stderr, "progress: {}/{} {} ({}%), {} tok/s\n", done, total, unit_, 10 * decile, rate);
  }
}

void ProgressBar::finish() {
  if (enabled_ && tty_ && drawn_) fmt::print(stderr, "\n");
}

ProgressFn progress_printer(std::string prefix, bool quiet, int64_t tokens_per_item, std::string tokens_stage) {
  // Message-less units drive one bar per stage; it ends when a line is printed or the stage changes.
  // Training steps ("train" lines after the first, done > 0) come many a second: on a terminal one
  // line is redrawn at most 4 times a second; elsewhere the first and last step of each run are
  // printed and the others at most one every 10 s.
  struct State {
    std::string stage;
    std::unique_ptr<ProgressBar> bar;
    bool tty = ::isatty(STDERR_FILENO) == 1;
    bool train_open = false;  // a redrawn training line without its newline yet
    std::chrono::steady_clock::time_point train_last{};
    void end_train_line() {
      if (train_open) fmt::print(stderr, "\n");
      train_open = false;
    }
    // Whether to show training step `done` of `total` now.
    bool train_due(int64_t done, int64_t total) {
      const auto now = std::chrono::steady_clock::now();
      const double since = std::chrono::duration<double>(now - train_last).count();
      const bool due = done == total || (!tty && done == 1) || since >= (tty ? 0.25 : 10.0);
      if (due) train_last = now;
      return due;
    }
  };
  auto state = std::make_shared<State>();
  return [prefix = std::move(prefix), quiet, tokens_per_item, tokens_stage = std::move(tokens_stage),
          state](const Progress& p) {
    // Warnings are not progress: --quiet keeps them.
    if (p.stage == "warning") {
      state->end_train_line();
      if (state->bar) state->bar->finish();  // a new line; the bar goes on below
      fmt::print(stderr, "{}: warning: {}\n", prefix, p.message);
      return true;
    }
    // The allocation table is printed from the report, on stdout.
    if (quiet || p.stage == "allocate") return true;
    if (p.message.empty()) {
      if (p.total <= 0) return true;
      state->end_train_line();
      if (!state->bar || state->stage != p.stage) {
        if (state->bar) state->bar->finish();
        state->stage = std::string(p.stage);
        const bool tokens = tokens_stage.empty() || p.stage == tokens_stage;
        state->bar = std::make_unique<ProgressBar>(std::string(p.stage), tokens ? tokens_per_item : 1, true);
      }
      state->bar->update(p.done, p.total);
      if (p.done == p.total) {
        state->bar->finish();
        state->bar.reset();
      }
      return true;
    }
    if (state->bar) {
      state->bar->finish();
      state->bar.reset();
    }
    if (p.stage == "train" && p.done > 0) {
      if (!state->train_due(p.done, p.total)) return true;
      if (state->tty) {
        // "\x1b[K" clears what a longer previous line left.
        fmt::print(stderr, "\r  {}\x1b[K", p.message);
        std::fflush(stderr);
        state->train_open = true;
        if (p.done == p.total) state->end_train_line();
      } else {
        fmt::print(stderr, "  {}\n", p.message);
      }
      return true;
    }
    state->end_train_line();
    if (p.stage == "tensor") {
      fmt::print(stderr, "{}\n", p.message);
    } else if (p.done == 0) {
      fmt::print(stderr, "{}: {}\n", prefix, p.message);
    } else {
      fmt::print(stderr, "  {}\n", p.message);
    }
    return true;
  };
}

}  // namespace calq::cli
