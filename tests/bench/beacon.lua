-- wrk script: the snippet's beacon, one pageview a request, as sendBeacon posts it
-- (text/plain, no preflight) for one returning visitor.
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
wrk.headers["Origin"] = "https://www.example.com"
wrk.body = '{"v":"0123456789abcdef0123456789abcdef","e":[{"t":"pageview","u":"https://www.example.com/pricing?utm_source=bench","r":"https://www.example.com/","ti":"Pricing"}]}'
