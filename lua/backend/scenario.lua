-- Deprecated: moved to backend.tools.scenario; this alias goes in the next release.
return require "backend.tools.scenario"
