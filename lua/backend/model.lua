-- Deprecated: moved to backend.tools.model; this alias goes in the next release.
return require "backend.tools.model"
