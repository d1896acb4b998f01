//! Writing to stdout. `dftg run … | head` closes the pipe early: that is the reader being done,
//! not an error, so a broken pipe ends the process quietly with success instead of a panic
//! (`println!` panics, and exits 101).

use std::io::Write;

/// Writes one line to stdout. A closed pipe exits 0 at once; any other write error exits 2 with
/// a message on stderr, as other errors do.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
    if let Err(e) = written {
        drop(out);
        finish_on(e);
    }
}

fn finish_on(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(2);
}

/// `println!` through [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
