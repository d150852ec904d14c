-- Deprecated: moved to backend.tools.check; this alias goes in the next release.
return require "backend.tools.check"
