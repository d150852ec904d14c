-- Deprecated: moved to backend.tools.repl; this alias goes in the next release.
return require "backend.tools.repl"
