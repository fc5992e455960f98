"""The configuration loader: shipped configs, every class of error, limit overrides, hashing."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import ConfigError
from config.limits_table import consistency_problem, with_release_defaults
from config.loader import (
    CONFIG_DIR,
    DEFAULT_DEPLOYMENT,
    check_file,
    deployment_limits,
    load_deployment,
    load_limits,
    load_mine,
    registry_json,
)
from config.model import (
    AlertsConfig,
    BrokerConfig,
    ConsoleConfig,
    DetectorConfig,
    HttpConfig,
    IngestConfig,
    Limits,
    NetworkingConfig,
    StoreConfig,
)

LIMITS = load_limits()
MINES = CONFIG_DIR / "mines"
SWITCHES = {"local_fan", "main_fan", "feed", "air_door"}


# ── helpers: small config files written into tmp_path ───────────────────────────────────────

def sensor(extra: str = "", **fields: Any) -> str:
    """A [[sensors]] block: a longwall-face T1 unless fields say otherwise (None drops a key)."""
    values = {"id": "T1-0101", "kind": "ch4", "location": "longwall_face",
              "place": "0101综采工作面", "area": "0101", "substation": "S01"} | fields
    lines = [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in values.items()
             if v is not None]
    return "[[sensors]]\n" + "\n".join(lines) + "\n" + extra + "\n"


def mine_text(*sensors: str, head: str = "") -> str:
    return ('[mine]\nid = "testmine"\nname = "测试煤矿"\nname_en = "Test Mine"\n' + head
            + '\n[[substations]]\nid = "S01"\nname = "1号分站"\n\n' + "\n".join(sensors))


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def header_line(text: str, header: str, n: int) -> int:
    """The line of the ``n``-th ``header`` (0-based) in ``text``."""
    return [i for i, line in enumerate(text.splitlines(), 1) if line == header][n]


def error_of(call: Callable[..., object], *args: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return info.value


def mine_error(tmp_path: Path, *sensors: str, head: str = "") -> ConfigError:
    return error_of(load_mine, write(tmp_path, mine_text(*sensors, head=head)), LIMITS)


def load_one(tmp_path: Path, block: str) -> Limits:
    return load_mine(write(tmp_path, mine_text(block)), LIMITS).sensors[0].limits


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped config folder (deployment, limits, mines)."""
    return Path(shutil.copytree(CONFIG_DIR, tmp_path / "config",
                                ignore=shutil.ignore_patterns("*.py", "__pycache__")))


# ── the shipped configuration ─────────────────────────────────────────────────────────────────

def test_shipped_deployment_runs_both_pilot_mines() -> None:
    deployment = load_deployment(environ={})
    assert [m.id for m in deployment.mines] == ["dayan", "qipanjing"]
    assert len(deployment.registry) == sum(len(m.sensors) for m in deployment.mines)
    assert re.fullmatch(r"[0-9a-f]{16}", deployment.config_hash)


@pytest.mark.parametrize(("mine_id", "needed"), [
    ("qipanjing", {("ch4", "longwall_upper_corner"), ("ch4", "longwall_face"),
                   ("ch4", "longwall_return"), ("ch4", "longwall_intake"),
                   ("ch4", "heading_face"), ("ch4", "heading_return"), ("ch4", "main_return"),
                   ("ch4", "district_return"), ("ch4", "electromechanical_chamber"),
                   ("temperature", "electromechanical_chamber"), ("co", "belt_roadway"),
                   ("o2", "face_intake"), ("co2", "face_intake"), ("wind_speed", "longwall_face"),
                   ("wind_speed", "district_airway"), ("wind_speed", "heading_coal"),
                   ("wind_speed", "heading_rock"), ("wind_speed", "main_airway"),
                   ("local_fan", "heading_fan"), ("feed", "switchgear")}),
    ("dayan", {("ch4", "longwall_face"), ("ch4", "heading_face"), ("co", "belt_roadway"),
               ("co", "goaf"), ("co", "longwall_return"), ("o2", "goaf"), ("o2", "face_intake"),
               ("temperature", "goaf"), ("local_fan", "heading_fan"), ("feed", "switchgear")}),
])
def test_pilot_mine_has_the_points_its_scenarios_need(mine_id: str,
                                                      needed: set[tuple[str, str]]) -> None:
    mine = load_mine(MINES / f"{mine_id}.toml", LIMITS)
    assert mine.id == mine_id and len(mine.sensors) >= 40
    assert needed <= {(s.kind, s.location) for s in mine.sensors}
    assert 5 <= len(mine.substations) <= 8
    assert len({s.area for s in mine.sensors if s.location.startswith("heading")}) >= 2
    for s in mine.sensors:
        assert s.period_s <= 30 if s.kind in SWITCHES else 10 <= s.period_s <= 15, s.id
    first_face_ch4 = next(s for s in mine.sensors
                          if s.kind == "ch4" and s.location == "longwall_face")
    assert first_face_ch4.id.startswith("T1-")


def test_t1_gets_the_statutory_methane_limits() -> None:
    mine = load_mine(MINES / "dayan.toml", LIMITS)
    t1 = next(s for s in mine.sensors if s.id == "T1-1201")
    assert (t1.limits.alarm_high, t1.limits.power_off, t1.limits.restore) == (1.0, 1.5, 1.0)
    assert t1.limits.release_high == 1.0  # defaults to the alarm limit
    assert t1.limits.source == LIMITS.resolve("ch4", "longwall_face").limits.source
    assert (t1.unit, t1.range_low, t1.range_high) == ("%", 0.0, 4.0)


def test_shipped_override_is_recorded_in_the_source() -> None:
    mine = load_mine(MINES / "qipanjing.toml", LIMITS)
    t1 = next(s for s in mine.sensors if s.id == "T1-1101")
    assert t1.limits.warning_high == 0.8 and t1.limits.alarm_high == 1.0
    assert "; override in qipanjing.toml sensors.T1-1101: 矿井规定" in t1.limits.source


def test_resolve_prefers_the_exact_row_then_any_location() -> None:
    assert LIMITS.resolve("temperature", "electromechanical_chamber").limits.alarm_high == 34.0
    assert LIMITS.resolve("temperature", "heading_face").location == "*"
    err = error_of(LIMITS.resolve, "ch4", "goaf")
    assert err.file == str(CONFIG_DIR / "limits.toml")
    assert "no limit row for kind 'ch4' at location 'goaf'" in err.message


# AQ 1029-2019 / 煤矿安全规程 (domain.md §1): methane (alarm ≥, power-off ≥, restore <) by location.
METHANE = {"longwall_upper_corner": (1.0, 1.5, 1.0), "longwall_face": (1.0, 1.5, 1.0),
           "longwall_return": (1.0, 1.0, 1.0), "longwall_intake": (0.5, 0.5, 0.5),
           "series_intake": (0.5, 0.5, 0.5), "drainage_roadway": (2.5, 2.5, 2.5),
           "shearer": (1.0, 1.5, 1.0), "heading_face": (1.0, 1.5, 1.0),
           "heading_return": (1.0, 1.0, 1.0), "district_return": (1.0, 1.0, 1.0),
           "main_return": (0.75, None, None), "motor_vicinity": (1.5, 1.5, 1.0)}


@pytest.mark.parametrize(("location", "limits"), METHANE.items())
def test_methane_has_its_statutory_limits_at_every_location_type(
        location: str, limits: tuple[float, float | None, float | None]) -> None:
    row = LIMITS.resolve("ch4", location)
    assert row.location == location and row.limits.source
    assert (row.limits.alarm_high, row.limits.power_off, row.limits.restore) == limits
    assert row.limits.inclusive  # AQ 1029 states methane limits as "≥"


# 煤矿安全规程 第136条 (domain.md §2): allowed air velocity by roadway type, (min, max) m/s.
AIR_VELOCITY = {"longwall_face": (0.25, 4.0), "heading_coal": (0.25, 4.0),
                "heading_rock": (0.15, 4.0), "district_airway": (0.25, 6.0),
                "belt_roadway": (0.25, 6.0), "trolley_roadway": (1.0, 8.0),
                "main_airway": (None, 8.0), "hoisting_shaft": (None, 8.0),
                "air_crossing": (None, 10.0), "materials_shaft": (None, 12.0),
                "fan_drift": (None, 15.0)}


@pytest.mark.parametrize(("location", "bounds"), AIR_VELOCITY.items())
def test_air_velocity_has_its_statutory_range_at_every_roadway_type(
        location: str, bounds: tuple[float | None, float]) -> None:
    row = LIMITS.resolve("wind_speed", location)
    assert row.location == location and "第136条" in row.limits.source
    assert (row.limits.alarm_low, row.limits.alarm_high) == bounds
    assert not row.limits.inclusive  # the range is allowed: 4.0 m/s at a face is no alarm


def test_every_kind_has_a_range_and_switches_are_zero_one() -> None:
    for name, kind in LIMITS.kinds.items():
        assert kind.range_low < kind.range_high, name
    assert {(LIMITS.kinds[k].range_low, LIMITS.kinds[k].range_high) for k in SWITCHES} == {(0, 1)}
    assert LIMITS.kinds["co"].range_high == 1000.0


def test_sample_deployment_shows_the_model_defaults(config_copy: Path) -> None:
    sample = (config_copy / DEFAULT_DEPLOYMENT.name).read_text(encoding="utf-8")
    uncommented, count = re.subn(r"^# (\w+ = .*)$", r"\1", sample, flags=re.MULTILINE)
    assert count == 59  # limits + 9 broker + 1 store + 9 ingest + 9 alerts + 18 detectors
    #                     + 10 networking + 1 http + 1 console
    deployment = load_deployment(write(config_copy, uncommented, "all.toml"), environ={})
    assert deployment.broker == BrokerConfig()
    assert deployment.store == StoreConfig()
    assert deployment.ingest == IngestConfig()
    assert deployment.alerts == AlertsConfig()
    assert deployment.detectors == DetectorConfig()
    assert deployment.networking == NetworkingConfig()
    assert deployment.http == HttpConfig()
    assert deployment.console == ConsoleConfig()


# ── mine-file errors ──────────────────────────────────────────────────────────────────────────

def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    err = mine_error(tmp_path, sensor(), "[[sensors]]\nid = T1-0102\n")
    text = mine_text(sensor(), "[[sensors]]\nid = T1-0102\n")
    assert err.location == f"line {text.splitlines().index('id = T1-0102') + 1}"
    assert err.message.startswith("invalid TOML: ")


def test_unknown_key_is_named_with_the_block_line_and_allowed_keys(tmp_path: Path) -> None:
    text = mine_text(sensor(), sensor(id="T2-0101", kidn="ch4"))
    err = error_of(load_mine, write(tmp_path, text), LIMITS)
    line = header_line(text, "[[sensors]]", 1)
    assert err.location == f"line {line} (sensors[1].kidn)"
    assert "unknown key 'kidn'" in err.message and "did you mean 'kind'?" in err.message
    assert "allowed keys: id, kind, location, place, area, substation" in err.message
    assert str(err).startswith(f"{tmp_path / 'mine.toml'}: line {line} ")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert load_mine(write(tmp_path, mine_text(sensor())), LIMITS).id == "testmine"
    path = write(tmp_path, mine_text(sensor()) + "\n[sensor_defaults]\nperiod_s = 10\n")
    err = error_of(load_mine, path, LIMITS)
    assert err.location == "sensor_defaults" and "allowed keys: mine, defaults" in err.message


@pytest.mark.parametrize(("extra", "location", "message"), [
    ('period_s = "ten"', "sensors[0].period_s", "expected a number, got 'ten'"),
    ("period_s = true", "sensors[0].period_s", "expected a number, got true"),
    ("period_s = nan", "sensors[0].period_s", "expected a finite number, got nan"),
    ("period_s = 0", "sensors[0].period_s", "expected a number above 0, got 0"),
    ("period_s = 31", "sensors[0].period_s", "AQ 6201-2019 sets the maximum patrol period at 30 s"),
    ('unit = "ppm"', "sensors[0].unit", "'ppm' differs from the unit of ch4, '%'"),
    ("range = [4, 0]", "sensors[0].range", "expected low < high, got [4, 0]"),
    ("range = [0, 1, 2]", "sensors[0].range", "expected [low, high] (two numbers)"),
    ("range = 4", "sensors[0].range", "expected an array [low, high], got 4"),
    ("limits = 1.0", "sensors[0].limits", "expected a table, got 1.0"),
])
def test_wrong_sensor_values(tmp_path: Path, extra: str, location: str, message: str) -> None:
    err = mine_error(tmp_path, sensor(extra))
    assert err.location.endswith(f"({location})") and message in err.message


@pytest.mark.parametrize(("fields", "key", "message"), [
    ({"kind": "methane"}, "kind", "'methane' is not a kind of the limits table: ch4, co"),
    ({"location": "face"}, "location", "'face' is not a location of the limits table"),
    ({"substation": "S09"}, "substation", "'S09' is not a substation declared in this file: S01"),
    ({"kind": "co2", "location": "goaf"}, "location", "no limit row for kind 'co2' at location"),
    ({"id": "T1 0101"}, "id", "expected a point code of letters, digits"),
    ({"place": None}, "place", "required key 'place' is missing: expected a string"),
    ({"area": ""}, "area", "expected a non-empty string"),
])
def test_wrong_sensor_references(tmp_path: Path, fields: dict[str, Any], key: str,
                                 message: str) -> None:
    err = mine_error(tmp_path, sensor(**fields))
    assert err.location.endswith(f"(sensors[0].{key})") and message in err.message


def test_duplicates_in_a_mine(tmp_path: Path) -> None:
    err = mine_error(tmp_path, sensor(), sensor(location="longwall_return"))
    assert "sensor id 'T1-0101' is used twice in mine 'testmine'" in err.message
    text = mine_text(sensor()).replace("[[substations]]",
                                       '[[substations]]\nid = "S01"\nname = "x"\n\n[[substations]]')
    err = error_of(load_mine, write(tmp_path, text), LIMITS)
    assert err.location == f"line {header_line(text, '[[substations]]', 1)} (substations[1].id)"
    assert "declared twice" in err.message


@pytest.mark.parametrize(("head", "location", "message"), [
    ('timezone = "Mars/Olympus"', "mine.timezone", "'Mars/Olympus' is not a known time zone"),
    ("[defaults]\nperiod_s = 45", "defaults.period_s", "maximum patrol period at 30 s"),
    ("[defaults]\nperod_s = 5", "defaults.perod_s", "did you mean 'period_s'?"),
])
def test_wrong_mine_header(tmp_path: Path, head: str, location: str, message: str) -> None:
    err = mine_error(tmp_path, sensor(), head=head)
    assert err.location == location and message in err.message


def test_mine_id_and_sensor_list_are_required(tmp_path: Path) -> None:
    err = error_of(load_mine, write(tmp_path, mine_text(sensor()).replace("testmine", "Test Mine")),
                   LIMITS)
    assert err.location == "mine.id" and "lowercase slug" in err.message
    err = mine_error(tmp_path)
    assert err.location == "sensors" and "at least one [[sensors]]" in err.message


def test_mine_defaults_and_timezone(tmp_path: Path) -> None:
    mine = load_mine(write(tmp_path, mine_text(sensor(), sensor(id="T2-0101", period_s=12),
                                               head="[defaults]\nperiod_s = 15")), LIMITS)
    assert [s.period_s for s in mine.sensors] == [15.0, 12.0]
    assert mine.timezone == "Asia/Shanghai" and mine.sensors[0].key == "testmine/T1-0101"


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    err = error_of(load_mine, tmp_path / "absent.toml", LIMITS)
    assert err.file == str(tmp_path / "absent.toml") and "cannot read the file" in err.message
    path = tmp_path / "gbk.toml"
    path.write_bytes("[mine]\nname = \"大雁\"\n".encode("gbk"))
    err = error_of(load_mine, path, LIMITS)
    assert err.message == "not UTF-8 text" and err.location.startswith("byte ")


# ── per-sensor limit overrides ────────────────────────────────────────────────────────────────

def test_stricter_override_is_accepted_and_release_follows_the_alarm(tmp_path: Path) -> None:
    limits = load_one(tmp_path, sensor('limits = { alarm_high = 0.8, power_off = 1.2, '
                                       'reason = "高突矿井规定" }'))
    assert (limits.alarm_high, limits.release_high, limits.power_off) == (0.8, 0.8, 1.2)
    assert limits.restore == 1.0
    assert limits.source.endswith("; override in mine.toml sensors.T1-0101: 高突矿井规定")


def test_looser_override_is_refused(tmp_path: Path) -> None:
    err = mine_error(tmp_path, sensor('limits = { alarm_high = 1.2, reason = "too many alarms" }'))
    assert err.location.endswith("(sensors[0].limits.alarm_high)")
    assert "1.2 is looser than the statutory 1 (AQ 1029-2019" in err.message
    err = mine_error(tmp_path, sensor('limits = { alarm_low = 0.1, reason = "x" }',
                                      kind="wind_speed", location="heading_coal"))
    assert "0.1 is looser than the statutory 0.25" in err.message


def test_looser_override_on_an_unsure_row_is_accepted_with_its_reason(tmp_path: Path) -> None:
    block = sensor('limits = { restore = 1.5, reason = "one copy of AQ 1029 gives 1.5 %" }',
                   id="T0-0101", location="longwall_upper_corner")
    limits = load_one(tmp_path, block)
    assert (limits.restore, limits.power_off, limits.unsure) == (1.5, 1.5, True)
    assert "override in mine.toml sensors.T0-0101: one copy of AQ 1029 gives 1.5 %" in limits.source


@pytest.mark.parametrize(("override", "key", "message"), [
    ("{ alarm_high = 0.8 }", "limits.reason", "required key 'reason' is missing"),
    ('{ reason = "x" }', "limits", "an override needs at least one of alarm_high"),
    ('{ alarm_hihg = 0.8, reason = "x" }', "limits.alarm_hihg", "did you mean 'alarm_high'?"),
    ('{ power_off = 0.8, reason = "x" }', "limits", "alarm_high 1 > power_off 0.8"),
    ('{ inclusive = false, reason = "x" }', "limits.inclusive", "unknown key 'inclusive'"),
])
def test_bad_overrides(tmp_path: Path, override: str, key: str, message: str) -> None:
    err = mine_error(tmp_path, sensor(f"limits = {override}"))
    assert err.location.endswith(f"(sensors[0].{key})") and message in err.message


@settings(max_examples=60, deadline=None)
@given(value=st.floats(0.0, 3.0, allow_nan=False).map(lambda v: round(v, 2)))
def test_override_accepted_exactly_when_not_looser(tmp_path_factory: pytest.TempPathFactory,
                                                   value: float) -> None:
    folder = tmp_path_factory.mktemp("override")
    path = write(folder, mine_text(sensor(f'limits = {{ alarm_high = {value}, reason = "r" }}')))
    if value <= 1.0:  # the T1 row: alarm 1.0, power-off 1.5
        limits = load_mine(path, LIMITS).sensors[0].limits
        assert limits.alarm_high == limits.release_high == value
        assert consistency_problem(limits) is None
    else:
        assert "looser than the statutory" in error_of(load_mine, path, LIMITS).message


@given(st.lists(st.one_of(st.none(), st.floats(-10, 10)), min_size=7, max_size=7))
def test_release_defaults_fill_only_missing_release_values(values: list[float | None]) -> None:
    ah, rh, po, rs, wh, al, rl = values
    limits = with_release_defaults(Limits(ah, rh, po, rs, wh, al, rl))
    assert limits.release_high == (ah if rh is None else rh)
    assert limits.release_low == (al if rl is None else rl)
    assert (limits.alarm_high, limits.power_off, limits.restore) == (ah, po, rs)


# ── the limits table's own errors ─────────────────────────────────────────────────────────────

VOCABULARY = ('[kinds.ch4]\nname = "甲烷"\nname_en = "methane"\nunit = "%"\nvalue_type = "MN"\n'
              'type_code = "0001"\nrange = [0, 4]\n\n'
              '[locations.longwall_face]\nname = "采煤工作面"\n'
              'name_en = "longwall working face"\ntag = "T1"\n\n')
ROW = ('[[limit]]\nkind = "ch4"\nlocation = "longwall_face"\nalarm_high = 1.0\npower_off = 1.5\n'
       'restore = 1.0\nsource = "AQ 1029-2019"\n')


@pytest.mark.parametrize(("rows", "location", "message"), [
    (ROW.replace('source = "AQ 1029-2019"\n', ""), "limit[0].source",
     "required key 'source' is missing"),
    (ROW.replace('"ch4"', '"ch5"'), "limit[0].kind", "'ch5' is not a kind of this table: ch4"),
    (ROW.replace('"longwall_face"', '"goaf"'), "limit[0].location", "'goaf' is not a location"),
    (ROW + "\n" + ROW, "limit[1]", "a second row for kind 'ch4' at location 'longwall_face'"),
    (ROW + "comment = 'x'\n", "limit[0].comment", "allowed keys: kind, location, alarm_high"),
    (ROW.replace("restore = 1.0", "restore = 2.0"), "limit[0]", "restore 2 > power_off 1.5"),
    (ROW.replace("restore = 1.0\n", ""), "limit[0]", "power_off and restore go together"),
])
def test_bad_limit_rows(tmp_path: Path, rows: str, location: str, message: str) -> None:
    text = VOCABULARY + rows
    err = error_of(load_limits, write(tmp_path, text, "limits.toml"))
    assert err.location.endswith(f"({location})") and message in err.message


def test_bad_kind_vocabulary(tmp_path: Path) -> None:
    text = VOCABULARY.replace('value_type = "MN"', 'value_type = "AN"') + ROW
    err = error_of(load_limits, write(tmp_path, text, "limits.toml"))
    assert err.location == "kinds.ch4.value_type" and "MN, KG, LJ, DT" in err.message
    text = VOCABULARY.replace("range = [0, 4]\n", "") + ROW
    err = error_of(load_limits, write(tmp_path, text, "limits.toml"))
    assert err.location == "kinds.ch4.range" and "required key 'range'" in err.message


def test_minimal_limits_table_loads(tmp_path: Path) -> None:
    table = load_limits(write(tmp_path, VOCABULARY + ROW, "limits.toml"))
    row = table.resolve("ch4", "longwall_face")
    assert row.limits.release_high is None  # stated values only; defaults applied per sensor
    assert with_release_defaults(row.limits).release_high == 1.0


def test_networking_without_a_url_archives_only(tmp_path: Path) -> None:
    """The sample configuration says so: enabled with an empty url writes and archives."""
    loaded = deployment(tmp_path, "[networking]\nenabled = true\n")
    assert loaded.networking.enabled and loaded.networking.url == ""
    err = error_of(deployment, tmp_path, '[networking]\nenabled = true\nurl = "http://x/"\n')
    assert err.location == "networking.url" and "sftp://" in err.message


def test_http_endpoint_may_be_turned_off_or_moved(tmp_path: Path) -> None:
    assert deployment(tmp_path, '[http]\nlisten = ""').http == HttpConfig(listen="")
    assert deployment(tmp_path, '[http]\nlisten = "[::1]:9200"').http.listen == "[::1]:9200"


# ── deployment files ──────────────────────────────────────────────────────────────────────────

def deployment(tmp_path: Path, body: str, **environ: str) -> Any:
    text = f'mines = ["{MINES / "dayan.toml"}"]\n' + body
    return load_deployment(write(tmp_path, text, "deploy.toml"), environ=environ)


@pytest.mark.parametrize(("body", "location", "message"), [
    ('[broker]\nurl = "http://broker:1883"', "broker.url", "expected mqtt://host[:port]"),
    ('[broker]\nurl = "mqtt://broker:port"', "broker.url", "bad port"),
    ('[broker]\nprotocol = "4"', "broker.protocol", "'4' is not an MQTT protocol version: 5,"),
    ("[broker]\nprotocol = 5", "broker.protocol", "expected a string, got 5"),
    ("[broker]\nin_flight = 0", "broker.in_flight", "expected an integer from 1 to 65535, got 0"),
    ("[broker]\nin_flight = 70000", "broker.in_flight", "from 1 to 65535, got 70000"),
    ("[broker]\nkeepalive_s = 1.5", "broker.keepalive_s", "expected an integer, got 1.5"),
    ('[broker]\npassword = "x"', "broker.password", "set JINMEI_MQTT_PASSWORD"),
    ('[store]\ntoken = "x"', "store.token", "set JINMEI_INFLUX_TOKEN"),
    ('[store]\nurl = "postgres://db/x"', "store.url", "sqlite:///path.db or influxdb"),
    ('[store]\nurl = "sqlite://readings.db"', "store.url", "sqlite:///relative/path.db"),
    ('[store]\nurl = "influxdb://db:8086?org=o"', "store.url", "lacks bucket"),
    ("[ingest]\nmax_future_s = -1", "ingest.max_future_s", "expected a number above 0"),
    ("[ingest]\nbatch_wait_ms = 0", "ingest.batch_wait_ms", "an integer of at least 1, got 0"),
    ('[ingest]\nstate_dir = " "', "ingest.state_dir", "expected a directory"),
    ("[ingest]\nstall_s = 0", "ingest.stall_s", "expected a number above 0, got 0"),
    ('[ingest]\noffline_after_s = "1m"', "ingest.offline_after_s", "expected a number"),
    ("[ingest]\nstore_fault_after_s = -5", "ingest.store_fault_after_s", "above 0, got -5"),
    ("[ingest]\nstall = 10", "ingest.stall", "did you mean 'stall_s'?"),
    ("[ingest]\nquarantine_after = 1", "ingest.quarantine_after", "of at least 2, got 1"),
    ('[alerts]\nmqtt = "yes"', "alerts.mqtt", "expected true or false, got 'yes'"),
    ('[http]\nlisten = "9108"', "http.listen", "expected host:port"),
    ('[http]\nlisten = "localhost:http"', "http.listen", "got 'localhost:http'"),
    ('[http]\nlisten = "127.0.0.1:70000"', "http.listen", "expected host:port"),
    ('[http]\nport = 9108', "http.port", "unknown key 'port'"),
    ('[alert]\nmqtt = true', "alert", "did you mean 'alerts'?"),
])
def test_wrong_deployment_values(tmp_path: Path, body: str, location: str, message: str) -> None:
    err = error_of(deployment, tmp_path, body)
    assert err.file == str(tmp_path / "deploy.toml")
    assert err.location == location and message in err.message


def test_deployment_values_and_secrets_from_the_environment(tmp_path: Path) -> None:
    body = ('[broker]\nurl = "mqtts://broker.example:8883"\nprotocol = "3.1.1"\nin_flight = 100\n'
            '[store]\nurl = "influxdbs://tsdb:8086?org=jinmei&bucket=readings"\n'
            "[ingest]\nbatch_max_messages = 5\n[alerts]\nmqtt = false\n")
    loaded = deployment(tmp_path, body, JINMEI_MQTT_PASSWORD="s3cret", JINMEI_INFLUX_TOKEN="tok")
    assert loaded.broker == BrokerConfig(url="mqtts://broker.example:8883", protocol="3.1.1",
                                         in_flight=100, password="s3cret")
    assert loaded.store.influx_token == "tok" and loaded.store.url.startswith("influxdbs://")
    assert loaded.ingest.batch_max_messages == 5 and loaded.alerts.mqtt is False
    bare = deployment(tmp_path, "")
    assert bare.broker.password == "" and bare.store.influx_token == ""


def test_deployment_refuses_the_same_mine_twice_and_missing_files(tmp_path: Path) -> None:
    text = f'mines = ["{MINES / "dayan.toml"}", "{MINES / "dayan.toml"}"]\n'
    err = error_of(load_deployment, write(tmp_path, text, "deploy.toml"))
    assert err.location == "mines[1]" and "mine 'dayan' is already loaded" in err.message
    err = error_of(load_deployment, write(tmp_path, 'mines = ["nowhere.toml"]', "deploy.toml"))
    assert err.file == str(tmp_path / "nowhere.toml") and "cannot read the file" in err.message
    err = error_of(load_deployment, write(tmp_path, "mines = []", "deploy.toml"))
    assert err.location == "mines" and "non-empty array of strings" in err.message


def test_deployment_with_its_own_limits_table(tmp_path: Path) -> None:
    write(tmp_path, VOCABULARY + ROW, "strict.toml")
    write(tmp_path, mine_text(sensor()), "m.toml")
    path = write(tmp_path, 'mines = ["m.toml"]\nlimits = "strict.toml"\n', "deploy.toml")
    loaded = load_deployment(path, environ={})
    assert loaded.mines[0].sensors[0].limits.source == "AQ 1029-2019"
    assert deployment_limits(loaded).source_file == str(tmp_path / "strict.toml")
    assert set(deployment_limits(load_deployment(environ={})).kinds) == set(LIMITS.kinds)


def test_config_hash_covers_every_loaded_file(config_copy: Path) -> None:
    sample = config_copy / DEFAULT_DEPLOYMENT.name
    # use the copy's limits table, not the shipped one
    sample.write_text('limits = "limits.toml"\n' + sample.read_text(encoding="utf-8"),
                      encoding="utf-8")
    first = load_deployment(sample, environ={}).config_hash
    assert load_deployment(sample, environ={}).config_hash == first  # same bytes, same hash
    hashes = {first}
    for name in ("mines/qipanjing.toml", "limits.toml", DEFAULT_DEPLOYMENT.name):
        path = config_copy / name  # a same-length edit in a comment: content, not size, counts
        path.write_text(path.read_text(encoding="utf-8").replace("jinmei", "JINMEI", 1),
                        encoding="utf-8")
        hashes.add(load_deployment(sample, environ={}).config_hash)
    assert len(hashes) == 4


# ── showing and checking ──────────────────────────────────────────────────────────────────────

def test_registry_json_round_trips() -> None:
    loaded = load_deployment(environ={})
    shown = registry_json(loaded)
    assert json.loads(json.dumps(shown, ensure_ascii=False)) == shown
    assert shown["config_hash"] == loaded.config_hash
    assert [m["id"] for m in shown["mines"]] == ["dayan", "qipanjing"]
    assert shown["mines"][0]["substations"][0].keys() == {"id", "name", "place", "code"}
    t1 = next(s for s in shown["sensors"] if s["id"] == "T1-1201")
    assert t1["range"] == [0.0, 4.0] and t1["mine"] == "dayan"
    assert {k: t1["limits"][k] for k in ("alarm_high", "power_off", "restore", "warning_high")} \
        == {"alarm_high": 1.0, "power_off": 1.5, "restore": 1.0, "warning_high": None}
    assert len(shown["sensors"]) == len(loaded.registry)


def test_check_file_tells_the_three_kinds_apart(tmp_path: Path) -> None:
    assert "mine dayan (大雁煤矿, Dayan Coal Mine), 50 sensors on 6 substations" in check_file(
        MINES / "dayan.toml")
    assert "limit overrides: 1" in check_file(MINES / "qipanjing.toml")
    assert re.search(r"limits table, 11 kinds, \d+ location types, \d+ limit rows",
                     check_file(CONFIG_DIR / "limits.toml"))
    summary = check_file(DEFAULT_DEPLOYMENT)
    assert "deployment of 2 mines (dayan 50 sensors, qipanjing 52 sensors)" in summary
    assert "config hash " in summary
    err = error_of(check_file, write(tmp_path, "[something]\nelse = 1\n", "x.toml"))
    assert "cannot tell what this file is" in err.message
    text = mine_text(sensor(kind="gas"))
    err = error_of(check_file, write(tmp_path, text, "m.toml"))
    assert err.location == f"line {header_line(text, '[[sensors]]', 0)} (sensors[0].kind)"


def test_consistency_problem_names_the_pair() -> None:
    assert consistency_problem(Limits(alarm_high=1.0, release_high=1.0)) is None
    assert consistency_problem(Limits(alarm_high=1.0, release_high=1.2)) == (
        "release_high 1.2 > alarm_high 1: an upper alarm clears at or below where it fired")
    assert "warning comes before the alarm" in str(
        consistency_problem(Limits(alarm_high=1.0, warning_high=1.1)))
    assert "range must not be empty" in str(consistency_problem(
        Limits(alarm_low=5.0, release_low=5.0, alarm_high=4.0, release_high=4.0)))
