-- GETs that name the current entity-tag in If-None-Match (304); the tag is the script's argument.
init = function(args)
  wrk.headers["If-None-Match"] = args[1]
end
