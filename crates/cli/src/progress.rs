//! Progress on stderr for long work; silent when stderr is not a terminal or with --quiet.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    pub fn pairs_bar(&self, total: usize) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:40} {pos}/{len} pairs  {per_sec}  elapsed {elapsed}  eta {eta}",
            )
            .expect("static template"),
        );
        bar
    }

    /// Training steps, with the loop's message (loss, learning rate, pairs/s).
    pub fn steps_bar(&self) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} step {pos}/{len}  {msg}  elapsed {elapsed}  eta {eta}",
            )
            .expect("static template"),
        );
        bar
    }
}
