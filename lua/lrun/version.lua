--- lrun.version — the version string, in one place for the launcher and lrun.version.
-- @module lrun.version
return "0.1.0"
