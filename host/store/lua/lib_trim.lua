local function trim_below(stream, group)
  local p = redis.call('XPENDING', stream, group)
  local floor = p[2]
  if p[1] == 0 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == group then floor = last end
    end
  end
  if floor then redis.call('XTRIM', stream, 'MINID', floor) end
end
