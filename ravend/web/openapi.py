"""The OpenAPI 3 document of /api/v1/, written by hand next to the code it describes (and
checked against the running server by schemathesis in tests/test_web_api.py)."""

from __future__ import annotations

from typing import Any

from ravend import __version__

_NUM = {"type": ["number", "null"]}
_INT_NULL = {"type": ["integer", "null"]}
_STR_NULL = {"type": ["string", "null"]}
_METER = {"type": "string", "pattern": "^0x[0-9a-f]{16}$"}
_TIME = {"anyOf": [{"type": "string", "format": "date", "pattern": "^(19[7-9][0-9]|20[0-9]{2})-"},
                  {"type": "integer", "minimum": 0, "maximum": 4_102_444_800}],
         "description": "a local date YYYY-MM-DD (midnight in [retention] time_zone, 1970 to"
         " 2099) or Unix seconds"}


def _param(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": text}


METER_PARAM = _param("meter", _METER, "the meter (default: the first one stored)")
START = _param("start", _TIME, "first instant of the range (inclusive; default: the"
               " endpoint's usual span before end)")
END = _param("end", _TIME, "end of the range (exclusive; default: the end of today). A range"
             " longer than the endpoint answers is cut after its first days; one that ends"
             " before it starts is empty")

_ERROR = {"description": "what was wrong", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_ERRORS = {"400": _ERROR, "401": _ERROR, "421": _ERROR, "429": _ERROR, "503": _ERROR}

_ENERGY = {"type": ["object", "null"], "required": ["delivered_kwh", "received_kwh", "cost"],
           "properties": {"delivered_kwh": _NUM, "received_kwh": _NUM, "cost": _NUM,
                          "export_credit": _NUM, "net_cost": _NUM, "currency": _STR_NULL,
                          "day": _STR_NULL, "start": {"type": "integer"}}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "Meters": {"type": "object", "required": ["meters"],
               "properties": {"meters": {"type": "array", "items": _METER}}},
    "Now": {"type": "object",
            "required": ["time", "meter_mac", "demand_kw", "direction", "today", "month",
                         "last_reading_age_s", "newest_id", "link", "service"],
            "properties": {
                "time": {"type": "number"}, "time_zone": {"type": "string"},
                "meter_mac": _STR_NULL,
                "demand_kw": {**_NUM, "description": "negative while exporting"},
                "direction": {"enum": ["import", "export", None]},
                "demand_time": _INT_NULL, "today": _ENERGY, "month": _ENERGY,
                "last_reading_at": _NUM, "last_reading_age_s": _NUM,
                "newest_id": {"type": "integer"},
                "link": {"type": ["object", "null"]},
                "service": {"type": "object", "required": ["running", "down"],
                            "properties": {"running": {"type": "boolean"},
                                           "answered": {"type": "boolean"},
                                           "summary": {"type": "string"},
                                           "down": {"type": "array"}}}}},
    "Point": {"type": "object",
              "required": ["start", "end", "demand_samples", "demand_avg_kw", "demand_max_kw",
                           "delivered_kwh", "received_kwh", "cost", "gap"],
              "properties": {
                  "start": {"type": "integer"}, "end": {"type": "integer"}, "day": _STR_NULL,
                  "demand_samples": {"type": "integer"}, "demand_avg_kw": _NUM,
                  "demand_min_kw": _NUM, "demand_max_kw": _NUM, "delivered_kwh": _NUM,
                  "received_kwh": _NUM, "cost": _NUM, "export_credit": _NUM,
                  "energy_seconds": {"type": "integer"}, "currency": _STR_NULL,
                  "gap": {"type": "boolean",
                          "description": "ended without one demand reading"}}},
    "Rollups": {"type": "object", "required": ["meter_mac", "resolution", "points"],
                "properties": {"meter_mac": _STR_NULL,
                               "resolution": {"enum": ["hourly", "daily", "monthly"]},
                               "start": {"type": "integer"}, "end": {"type": "integer"},
                               "time_zone": {"type": "string"},
                               "points": {"type": "array",
                                          "items": {"$ref": "#/components/schemas/Point"}}}},
    "Report": {"type": "object", "required": ["meters"],
               "properties": {"time_zone": {"type": "string"}, "meters": {
                   "type": "array", "items": {"type": "object",
                                              "required": ["meter_mac", "days", "totals"],
                                              "properties": {
                                                  "meter_mac": {"type": "string"},
                                                  "days": {"type": "array"},
                                                  "totals": {"type": "object"}}}}}},
    "Device": {"type": "object", "required": ["meters", "states"],
               "properties": {"device_info": {"type": ["object", "null"]},
                              "firmware": _STR_NULL,
                              "meters": {"type": "array", "items": _METER},
                              "link": {"type": ["object", "null"]},
                              "price": {"type": ["object", "null"]},
                              "states": {"type": "array"}}},
    "Health": {"type": "object", "required": ["version", "store", "service"],
               "properties": {"version": {"type": "string"},
                              "store": {"type": "object", "required": ["ok"]},
                              "service": {"type": "object", "required": ["running"]}}},
}


def _get(summary: str, schema: str | None, params: list[dict[str, Any]],
         content: dict[str, Any] | None = None) -> dict[str, Any]:
    ok = content or {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {"get": {"summary": summary, "parameters": params,
                    "responses": {"200": {"description": summary, "content": ok}, **_ERRORS}}}


def document() -> dict[str, Any]:
    resolution = _param("resolution", {"enum": ["hourly", "daily", "monthly"],
                                       "default": "hourly"},
                        "hourly: UTC hours; daily, monthly: local days and months")
    fmt = _param("format", {"enum": ["csv", "jsonl"], "default": "csv"},
                 "CSV with a header, or JSON lines (as ravenctl export)")
    rollup = _param("rollup", {"enum": ["raw", "hourly", "daily"], "default": "raw"},
                    "raw readings, or the hourly or daily roll-ups")
    return {
        "openapi": "3.1.0",
        "info": {"title": "ravend-web", "version": __version__,
                 "description": "Read-only JSON API of ravend's store: only GET and HEAD."},
        "paths": {
            "/api/v1/meters": _get("meters with readings", "Meters", []),
            "/api/v1/now": _get("live demand, today and this month so far", "Now",
                                [METER_PARAM]),
            "/api/v1/now/stream": _get(
                "Server-Sent Events: `now` after each new reading", None, [METER_PARAM],
                {"text/event-stream": {"schema": {"type": "string"}}}),
            "/api/v1/rollups": _get("one point per period, gaps as nulls", "Rollups",
                                    [METER_PARAM, resolution, START, END]),
            "/api/v1/report": _get("per local day, as ravenctl report", "Report",
                                   [METER_PARAM, START, END]),
            "/api/v1/readings": _get(
                "raw readings or roll-ups, as ravenctl export", None,
                [METER_PARAM, fmt, rollup, START, END],
                {"text/csv": {"schema": {"type": "string"}},
                 "application/jsonl": {"schema": {"type": "string"}}}),
            "/api/v1/device": _get("the stick's stored state, meters, link and price", "Device",
                                   [METER_PARAM]),
            "/api/v1/health": _get("the store and the running ravend", "Health", []),
            "/api/v1/openapi.json": _get("this document", None, [],
                                         {"application/json": {"schema": {"type": "object"}}}),
        },
        "components": {"schemas": SCHEMAS},
    }
