-- wrk script: the snippet's beacon, one pageview a request, as sendBeacon posts it
-- (text/plain, no preflight), from 100,000 returning visitors in turn: a site's beacons come
-- from many browsers, a few each (one visitor's flood makes the judge look back at 50 of its
-- events on every beacon, which no browser causes).
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
wrk.headers["Origin"] = "https://www.example.com"
local body = '{"v":"%032x","e":[{"t":"pageview","u":"https://www.example.com/pricing?utm_source=bench",' ..
             '"r":"https://www.example.com/","ti":"Pricing"}]}'
local visitors, i = 100000, 0

function request()
  i = i % visitors + 1
  return wrk.format(nil, nil, nil, string.format(body, i))
end
