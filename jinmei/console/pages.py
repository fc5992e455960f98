"""The console's HTML, rendered on the server: plain functions from values to escaped text.

Chinese first, English on the toggle (:data:`WORDS`, ``lang`` "zh" or "en"). Every time shown is
the mine's local time with its offset (``2026-12-03 20:01:02+08:00``). Every form carries the
session's CSRF token (:func:`form`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from alerts.messages import DEFAULT_TIMEZONE
from alerts.wire import Alert
from config.model import ConsoleUser, Mine, Sensor
from jinmei.console.live import Point

__all__ = ["WORDS", "Text", "form", "local_time", "page"]

WORDS: dict[str, tuple[str, str]] = {
    "title": ("金煤 调度台", "jinmei dispatcher console"),
    "overview": ("总览", "Overview"),
    "login": ("登录", "Log in"),
    "logout": ("退出", "Log out"),
    "user": ("用户名", "User name"),
    "password": ("密码", "Password"),
    "lang": ("English", "中文"),
    "mine": ("煤矿", "Mine"),
    "open_alerts": ("未结束报警", "Open alerts"),
    "critical": ("严重", "critical"),
    "alarm": ("报警", "alarm"),
    "warning": ("预警", "warning"),
    "points": ("测点", "Points"),
    "newest": ("最新数据", "Newest reading"),
    "age": ("距今", "age"),
    "seconds": ("秒", "s"),
    "never": ("无", "none"),
    "unavailable": ("该矿的监测进程未运行（正在重启），数据暂缺",
                    "The worker process of this mine is down (being restarted): no figures"),
    "ok": ("正常", "normal"),
    "power_off": ("断电", "power-off"),
    "fault": ("故障", "fault"),
    "calibrating": ("标校", "calibrating"),
    "no_data": ("无数据", "no data"),
    "area": ("区域", "Area"),
    "sensor": ("测点", "Point"),
    "kind": ("类型", "Kind"),
    "place": ("安装地点", "Place"),
    "value": ("当前值", "Value"),
    "unit": ("单位", "Unit"),
    "state": ("状态", "State"),
    "limits": ("报警/断电/复电", "alarm / power-off / restore"),
    "time": ("时间", "Time"),
    "severity": ("级别", "Severity"),
    "started": ("开始时间", "Started"),
    "rule": ("规则", "Rule"),
    "message": ("内容", "Message"),
    "ack": ("确认", "Acknowledge"),
    "acked_by": ("已确认", "Acknowledged by"),
    "note": ("备注", "Note"),
    "cause": ("原因", "Cause"),
    "action": ("处理措施", "Action taken"),
    "save_cause": ("保存原因与措施", "Save cause and action"),
    "entered_by": ("录入人", "Entered by"),
    "alerts_changed": ("报警列表有变化，点击此处刷新（正在填写的内容将丢失）",
                       "The alert list changed: click here to refresh it (what you are typing "
                       "is lost)"),
    "no_alerts": ("无未结束报警", "No open alerts"),
    "silences": ("屏蔽", "Silences"),
    "silence_note": ("屏蔽只暂停通知，报警照常记录；甲烷断电永不屏蔽。",
                     "A silence only holds back notifications; alerts are still recorded, and a "
                     "methane power-off is never silenced."),
    "any": ("（任意）", "(any)"),
    "duration": ("时长（如 30m、2h、1d）", "Duration (e.g. 30m, 2h, 1d)"),
    "reason": ("原因", "Reason"),
    "create_silence": ("新建屏蔽", "Create silence"),
    "end_silence": ("结束屏蔽", "End silence"),
    "end_confirm": ("确定结束此屏蔽？", "End this silence?"),
    "until": ("至", "until"),
    "by": ("创建人", "by"),
    "no_silences": ("无生效的屏蔽", "No silences in force"),
    "history": ("报警历史", "Alert history"),
    "since": ("起始日期", "From date"),
    "filter": ("筛选", "Filter"),
    "transition": ("变化", "Transition"),
    "firing": ("开始", "firing"),
    "resolved": ("结束", "resolved"),
    "read_only": ("只读（监管）", "read-only (regulator)"),
    "role_dispatcher": ("调度员", "dispatcher"),
    "role_regulator": ("监管", "regulator"),
    "role_admin": ("管理员", "admin"),
    "timezone": ("时区", "Time zone"),
    "live": ("实时数据，秒级更新", "live, updated as readings arrive"),
}


class Text:
    """The words of one language: ``t("key")``."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in ("zh", "en") else "zh"
        self._i = 0 if self.lang == "zh" else 1

    def __call__(self, key: str) -> str:
        return WORDS[key][self._i] if key in WORDS else key

    def pick(self, pair: tuple[str, str]) -> str:
        return pair[self._i]

    def message(self, alert: Alert) -> str:
        """The alert's message in this language (the record keeps Chinese, then English)."""
        lines = alert.message.splitlines() or [""]
        return lines[min(self._i, len(lines) - 1)]


def local_time(ms: int | None, zone: str) -> str:
    if ms is None or ms < 0:
        return ""
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone or DEFAULT_TIMEZONE)).isoformat(
        sep=" ", timespec="seconds")


def form(action: str, csrf: str, body: str, *, css: str = "inline", confirm: str = "") -> str:
    ask = f' data-confirm="{escape(confirm)}"' if confirm else ""
    return (f'<form method="post" action="{escape(action)}" class="{css}"{ask}>'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">{body}</form>')


def page(t: Text, title: str, body: str, *, user: ConsoleUser | None = None, csrf: str = "",
         data: Iterable[tuple[str, str]] = (), refresh_s: int = 0) -> str:
    """A whole page: header with the language toggle and, when logged in, who and log out."""
    attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in data)
    who = ""
    if user is not None:
        role = t(f"role_{user.role}")
        who = (f'<span class="who">{escape(user.name)} · {escape(role)}</span>'
               + form("/console/logout", csrf, f'<button type="submit">{t("logout")}</button>'))
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (f'<!doctype html><html lang="{"zh-CN" if t.lang == "zh" else "en"}"><head>'
            f'<meta charset="utf-8"><title>{escape(title)} · {t("title")}</title>{meta}'
            '<link rel="stylesheet" href="/console/static/console.css">'
            '<script src="/console/static/console.js" defer></script></head>'
            f'<body{attrs}><header><h1>{t("title")}</h1>'
            f'<a href="/console/">{t("overview")}</a>'
            f'<a href="/console/lang?to={"en" if t.lang == "zh" else "zh"}" id="lang">'
            f'{t("lang")}</a>{who}</header><main>{body}</main></body></html>')


def state_badge(t: Text, state: str) -> str:
    return f'<span class="state st-{state}" data-state="{state}">{t(state)}</span>'


def number(value: float) -> str:
    return "" if value != value else f"{value:.2f}"  # NaN: no reading yet


def limits_text(sensor: Sensor) -> str:
    lim = sensor.limits
    parts = [number(v) if v is not None else "–"
             for v in (lim.alarm_high, lim.power_off, lim.restore)]
    low = f" ≤{number(lim.alarm_low)}" if lim.alarm_low is not None else ""
    return " / ".join(parts) + low


def point_row(t: Text, sensor: Sensor, kind: str, point: Point, zone: str) -> str:
    return (f'<tr id="p-{escape(sensor.id)}"><td>{escape(sensor.id)}</td><td>{escape(kind)}</td>'
            f'<td>{escape(sensor.place)}</td><td class="num value">{number(point.value)}</td>'
            f'<td>{escape(sensor.unit)}</td><td>{state_badge(t, point.state)}</td>'
            f'<td class="num">{escape(limits_text(sensor))}</td>'
            f'<td class="at">{local_time(point.ts, zone)}</td></tr>')


def areas_html(t: Text, groups: Sequence[tuple[str, str, list[str]]]) -> str:
    """Each area (name, kind of place, its rows) as a table."""
    out = []
    for area, where, rows in groups:
        out.append(f'<h2>{t("area")} {escape(area)} · {escape(where)}</h2><table><tr>'
                   f'<th>{t("sensor")}</th><th>{t("kind")}</th><th>{t("place")}</th>'
                   f'<th>{t("value")}</th><th>{t("unit")}</th><th>{t("state")}</th>'
                   f'<th>{t("limits")}</th><th>{t("time")}</th></tr>{"".join(rows)}</table>')
    return "".join(out)


def alerts_html(t: Text, mine: Mine, alerts: Sequence[Alert],
                acks: dict[str, tuple[str, int, str]],
                causes: dict[str, tuple[str, str, str, int]], *, may_act: bool,
                csrf: str) -> str:
    """Open alerts, most severe first then oldest; ack and cause/action forms for those who
    may act (a regulator gets neither)."""
    if not alerts:
        return f'<p id="no-alerts">{t("no_alerts")}</p>'
    base = f"/console/mine/{mine.id}"
    rows = []
    for a in alerts:
        ack = acks.get(a.id)
        if ack is not None:
            note = f" — {escape(ack[2])}" if ack[2] else ""
            acked = (f'<span class="acked">{t("acked_by")} {escape(ack[0])} '
                     f'{local_time(ack[1], mine.timezone)}{note}</span>')
        elif may_act:
            acked = form(f"{base}/ack", csrf,
                         f'<input type="hidden" name="episode" value="{escape(a.id)}">'
                         f'<input name="note" placeholder="{t("note")}" maxlength="500">'
                         f'<button type="submit" class="ack">{t("ack")}</button>')
        else:
            acked = ""
        cause = causes.get(a.id)
        cause_html = ""
        if cause is not None:
            cause_html = (f'<div class="cause">{t("cause")}: {escape(cause[0])}; {t("action")}: '
                          f'{escape(cause[1])} <span class="note">({t("entered_by")} '
                          f'{escape(cause[2])} {local_time(cause[3], mine.timezone)})</span></div>')
        if may_act:
            cause_html += cause_form(t, base, a.id, csrf, cause)
        rows.append(f'<tr class="alert sev-{escape(a.severity)}" data-episode="{escape(a.id)}" '
                    f'data-rule="{escape(a.rule)}" data-sensor="{escape(a.sensor)}">'
                    f'<td>{t(a.severity)}</td><td>{local_time(a.started_at, mine.timezone)}</td>'
                    f'<td>{escape(a.sensor)}</td><td>{escape(a.rule)}</td>'
                    f'<td>{escape(t.message(a))}</td><td>{acked}{cause_html}</td></tr>')
    return (f'<table><tr><th>{t("severity")}</th><th>{t("started")}</th><th>{t("sensor")}</th>'
            f'<th>{t("rule")}</th><th>{t("message")}</th><th>{t("ack")}</th></tr>'
            f'{"".join(rows)}</table>')


def cause_form(t: Text, base: str, episode: str, csrf: str,
               cause: tuple[str, str, str, int] | None) -> str:
    old = cause or ("", "", "", 0)
    return form(f"{base}/cause", csrf,
                f'<input type="hidden" name="episode" value="{escape(episode)}">'
                f'<input name="cause" placeholder="{t("cause")}" value="{escape(old[0])}" '
                f'maxlength="200" required>'
                f'<input name="action" placeholder="{t("action")}" value="{escape(old[1])}" '
                f'maxlength="200" required>'
                f'<button type="submit" class="save-cause">{t("save_cause")}</button>',
                css="inline cause-form")


def options(t: Text, name: str, values: Iterable[str]) -> str:
    items = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    return f'<select name="{name}"><option value="">{t("any")}</option>{items}</select>'

