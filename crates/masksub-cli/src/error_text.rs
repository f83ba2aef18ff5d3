//! One line for an error and its causes, as the CLI prints it.
//!
//! The library errors put their cause in their own message (so a plain `{}` is complete) and
//! also chain it as the `source`; anyhow's `{:#}` would then print the cause twice.

/// `outer: cause: cause ...`, leaving out a cause whose text the line already holds.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let lib = masksub_data::DataError::Io {
            path: "/x/y".into(),
            source: io,
        };
        let e = anyhow::Error::new(lib);
        assert_eq!(format!("{e:#}"), "/x/y: no such file: no such file");
        assert_eq!(error_text(&e), "/x/y: no such file");
        let wrapped = Err::<(), _>(e).context("--data /x/y").unwrap_err();
        assert_eq!(error_text(&wrapped), "--data /x/y: /x/y: no such file");
    }
}
