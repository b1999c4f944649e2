use std::borrow::Cow;

use super::strftime::{civil_from_days, days_from_civil, strftime_utc};
use super::tojson::py_float_repr;
use super::*;

#[test]
fn float_repr_matches_python() {
    let cases = [
        (1.0, "1.0"),
        (0.5, "0.5"),
        (-2.25, "-2.25"),
        (0.1, "0.1"),
        (1e-4, "0.0001"),
        (1e-5, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (1.25e100, "1.25e+100"),
        (123456.789, "123456.789"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (f64::INFINITY, "Infinity"),
    ];
    for (x, want) in cases {
        assert_eq!(py_float_repr(x), want, "{x}");
    }
}

#[test]
fn strftime_formats_like_glibc() {
    // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
    let t = days_from_civil(2024, 7, 26) * 86_400 + 13 * 3600 + 5 * 60 + 9;
    assert_eq!(strftime_utc("%d %b %Y", t), "26 Jul 2024");
    assert_eq!(strftime_utc("%-d %B %Y", t), "26 July 2024");
    assert_eq!(
        strftime_utc("%A %a %j %H:%M:%S %I %p %y %m %e %%", t),
        "Friday Fri 208 13:05:09 01 PM 24 07 26 %"
    );
    assert_eq!(strftime_utc("%F %T %Q", t), "2024-07-26 13:05:09 %Q");
    let t = days_from_civil(2025, 1, 5) * 86_400;
    assert_eq!(strftime_utc("%-m/%-d %e|%I%p", t), "1/5  5|12AM");
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
}

#[test]
fn generation_tags_become_if_blocks() {
    let src = "{% for m in messages %}{%- generation -%}{{ m }}{% endgeneration %}{% endfor %}";
    assert_eq!(
        rewrite_generation_tags(src),
        "{% for m in messages %}{%- if true -%}{{ m }}{% endif %}{% endfor %}"
    );
    let untouched = "{{ 'generation' }}{% if generation_x %}{% endif %}";
    assert!(matches!(
        rewrite_generation_tags(untouched),
        Cow::Borrowed(_)
    ));
}
