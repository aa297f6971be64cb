-- wrk script: the default `contact` form posted urlencoded by 100,000 people in turn
-- (growth.py and pair.sh's form target)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local i = 0
function request()
  i = i % 100000 + 1
  return wrk.format(nil, nil, nil, "email=u" .. i .. "%40example.com&first_name=U" .. i ..
                    "&company=Company+" .. (i % 5000) .. "&message=Please+call+me")
end
