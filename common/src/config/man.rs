//! Renders the parameter table as the `sloop.toml(5)` man page (`sloop config man`),
//! from the same declarations as `etc/sloop.toml` and `docs/configuration.md`, so the
//! installed page cannot drift from the code. The package build runs it.

use super::params::{self, PARAMS, SECTIONS};
use super::render::{kind_name, shown_default};

/// The roff source of sloop.toml(5). `version` goes into the page footer.
pub fn render_man(version: &str) -> String {
    let mut out = format!(
        ".TH \"SLOOP.TOML\" \"5\" \"\" \"Sloop {}\" \"Sloop Manual\"\n",
        text(version)
    );
    out.push_str(
        ".SH NAME\n\
         sloop.toml \\- configuration file of the Sloop mail transfer agent\n\
         .SH SYNOPSIS\n\
         .B /etc/sloop/sloop.toml\n\
         .SH DESCRIPTION\n\
         Sloop reads one TOML file: the file given with \\fB\\-c\\fR \\fIFILE\\fR, else \
         \\fB$SLOOP_CONFIG\\fR, else \\fB/etc/sloop/sloop.toml\\fR. \
         Unknown keys are errors; an omitted key takes the default shown below. \
         Relative paths are relative to the file's own directory. \
         Sizes take units (512K, 25M, 1G); durations need one (100ms, 30s, 5m, 4h, 5d, 1w).\n\
         .PP\n\
         \\fBsloop config check\\fR validates the file and lists every error with file, \
         key, line, the value found and what is expected. \
         \\fBsloopd\\fR refuses to start (exit 78) on an invalid file, and a reload \
         (SIGHUP) with an invalid file keeps the running configuration.\n\
         .PP\n\
         Each key below is shown as it is written inside its [section] table, with its \
         type and default.\n",
    );
    for (section, about) in SECTIONS {
        let header = if params::is_array_section(section) {
            format!("[[{section}]]")
        } else {
            format!("[{section}]")
        };
        out.push_str(&format!(".SH \"{}\"\n{}\n", text(&header), text(about)));
        for p in PARAMS
            .iter()
            .filter(|p| p.key.split('.').next() == Some(section))
        {
            let name = p.key.split_once('.').map(|(_, k)| k).unwrap_or(p.key);
            let default = if p.default == params::REQUIRED {
                "required".to_string()
            } else {
                format!(
                    "default {}",
                    shown_default(p, |s| format!("\\fB{}\\fR", text(s)))
                )
            };
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR ({}; {})\n{}\n",
                text(name),
                text(&kind_name(p.kind).replace("\\|", "|")),
                default,
                text(p.doc)
            ));
        }
    }
    out.push_str(
        ".SH FILES\n\
         .TP\n\
         .B /etc/sloop/sloop.toml\n\
         The configuration, a conffile of the Debian package.\n\
         .SH \"SEE ALSO\"\n\
         .BR sloopd (8),\n\
         .BR sloop (8),\n\
         .BR sloop\\-sendmail (1),\n\
         .BR aliases (5)\n",
    );
    out
}

/// Escapes text for roff: backslashes, and hyphens as minus signs (keys, options and
/// values are typed literally). A line never starts with a control character because
/// every value is preceded by markup on its line.
fn text(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_an_entry_and_no_line_starts_a_request_by_accident() {
        let page = render_man("1.2.3");
        assert!(page.starts_with(".TH \"SLOOP.TOML\" \"5\""));
        for p in PARAMS {
            let name = p.key.split_once('.').map(|(_, k)| k).unwrap_or(p.key);
            assert!(
                page.contains(&format!("\\fB{}\\fR (", text(name))),
                "{} missing",
                p.key
            );
        }
        for line in page.lines() {
            if line.starts_with('.') || line.starts_with('\'') {
                let request = line[1..].split_whitespace().next().unwrap_or("");
                assert!(
                    ["TH", "SH", "SS", "TP", "PP", "B", "BR"].contains(&request),
                    "unexpected request line: {line}"
                );
            }
        }
    }
}
