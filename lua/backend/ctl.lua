-- Deprecated: moved to backend.tools.ctl; this alias goes in the next release.
return require "backend.tools.ctl"
